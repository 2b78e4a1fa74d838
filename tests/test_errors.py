"""One readable line for any exception the CLI catches (segattn.errors.error_message)."""

import pytest

from segattn.errors import SegattnError, error_message, one_line


def test_bare_key_error_becomes_a_message():
    assert error_message(KeyError("optimizer")) == "missing key 'optimizer'"
    assert error_message(KeyError("unknown config key 'x' in 'train'")) == "unknown config key 'x' in 'train'"
    assert error_message(KeyError(3)) == "missing key 3"


def test_os_error_names_its_path():
    exc = PermissionError(13, "Permission denied", "/data/out/m.json")
    assert error_message(exc) == "/data/out/m.json: Permission denied"
    assert error_message(FileNotFoundError("config 'x' not found")) == "config 'x' not found"


def test_multi_line_messages_become_one_line():
    text = error_message(ValueError("first\n  second\n\nthird"))
    assert text == "first second third"
    assert len(error_message(ValueError("x" * 5000))) <= 600


def test_dataloader_worker_traceback_is_dropped():
    msg = ("Caught DatasetError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
           '  File "x.py", line 1, in f\nsegattn.data.datasets.base.DatasetError: cannot read image a.png: bad')
    assert error_message(ValueError(msg)) == "cannot read image a.png: bad"


def test_unexpected_types_name_themselves_and_the_debug_switch():
    text = error_message(RuntimeError("boom"))
    assert text.startswith("RuntimeError: boom") and "SEGATTN_DEBUG=1" in text
    assert error_message(SegattnError("plain")) == "plain"
    assert error_message(ZeroDivisionError()).startswith("ZeroDivisionError")


@pytest.mark.parametrize("text,limit", [("a  b", 10), ("abcdefghijkl", 8)])
def test_one_line(text, limit):
    out = one_line(text, limit)
    assert "\n" not in out and len(out) <= limit


def test_a_failed_torch_write_reads_as_a_write_failure_with_its_cause():
    """torch.save reports a full disk as "unexpected pos ..." (file object) or "PytorchStreamWriter
    failed writing file ..." (path), hiding the OSError: the line names the write and the cause."""
    import errno
    import io

    import torch

    class FullDisk(io.RawIOBase):  # full after the first kilobyte
        left = 1000

        def writable(self):
            return True

        def write(self, data):
            if len(data) > self.left:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.left -= len(data)
            return len(data)

    with pytest.raises(RuntimeError) as info:
        torch.save({"w": torch.zeros(1000)}, FullDisk())
    message = error_message(info.value)
    assert message.startswith("a PyTorch file could not be written (No space left on device): ")
    assert "SEGATTN_DEBUG" not in message
    bare = RuntimeError("[enforce fail at inline_container.cc:593] . PytorchStreamWriter failed writing file data/1: "
                        "file write failed")
    assert error_message(bare).startswith("a PyTorch file could not be written (is the disk full?): ")
    assert error_message(RuntimeError("shape mismatch")).startswith("RuntimeError: shape mismatch")
