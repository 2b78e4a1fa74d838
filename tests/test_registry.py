import pytest
from torch import nn

import segattn
from segattn.registry import Registry


def test_register_and_create():
    reg = Registry("thing")

    @reg.register("conv_a", paper="x")
    class A(nn.Module):
        def __init__(self, channels: int, width: int = 3) -> None:
            super().__init__()
            self.width = width

    assert reg.list() == ["conv_a"]
    assert reg.create("CONV_A", 4, width=5).width == 5
    assert reg.meta("conv_a") == {"paper": "x"}
    with pytest.raises(ValueError, match="did you mean 'conv_a'"):
        reg.create("conv_b", 4)
    with pytest.raises(ValueError, match=r"^unknown thing 'zzz'\. Registered: conv_a$"):  # was "'zzz' Registered"
        reg.create("zzz", 4)
    with pytest.raises(TypeError, match=r"'widht' \(did you mean 'width'\?\); accepted: channels, width"):
        reg.create("conv_a", 4, widht=5)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("conv_a")(nn.Identity)


def test_list_pattern():
    reg = Registry("thing")
    for n in ("nonlocal", "nonlocal_dot", "danet"):
        reg.register(n)(nn.Identity)
    assert reg.list("nonlocal*") == ["nonlocal", "nonlocal_dot"]


def test_public_errors():
    with pytest.raises(ValueError, match="unknown context module 'nonlocl'; did you mean 'nonlocal'"):
        segattn.create_module("nonlocl", 8)
    with pytest.raises(TypeError, match="accepted:"):
        segattn.create_module("nonlocal", 8, not_an_argument=1)
