import torch

from segattn.bench.tensors import LargestTensorRecorder, largest_tensor


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
