import torch

from segattn.bench.tensors import LargestTensorRecorder, PeakLiveRecorder, largest_tensor


def test_recorder_sees_op_outputs_and_saved_tensors():
    x = torch.randn(30, 4, requires_grad=True)
    with LargestTensorRecorder() as rec:
        (x @ x.T).softmax(-1).sum().backward()
    assert rec.largest == 900 and rec.largest_saved == 900
    with LargestTensorRecorder() as rec:
        (x * 2).sum().backward()
    assert rec.largest == 120


def test_largest_tensor_runs_forward_and_backward():
    module = torch.nn.Conv2d(3, 5, 1)
    x = torch.randn(1, 3, 4, 4, requires_grad=True)
    rec = largest_tensor(module, x)
    assert rec.largest == 80 and x.grad is not None and module.weight.grad is not None


def test_peak_live_recorder_counts_what_is_alive_at_once():
    x = torch.ones(1000)  # made before the block: not counted
    with PeakLiveRecorder() as rec:
        a = x * 2  # 4000 bytes
        b = a * 2  # 8000 alive
        del a
        c = b.view(10, 100)  # a view: nothing new
        c.mul_(2)  # in place: nothing new
        d = b + 1  # 8000 alive again (a was freed)
        del b, c, d
    assert rec.peak == 8000 and rec.current == 0


def test_peak_live_recorder_sees_the_backward():
    x = torch.randn(256, requires_grad=True)
    with PeakLiveRecorder() as rec:
        (x.exp() * 3).sum().backward()
    assert rec.peak >= 2 * 256 * 4 and rec.current <= 256 * 4  # x.grad stays alive
