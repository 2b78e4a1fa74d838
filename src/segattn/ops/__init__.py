"""The few kernels everything reuses; each has a naive reference form used in tests."""

from segattn.ops.attention import linear_attention, reference_attention, softmax_attention, use_reference

__all__ = ["softmax_attention", "linear_attention", "reference_attention", "use_reference"]
