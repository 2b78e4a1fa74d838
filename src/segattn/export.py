"""Export a segmentation model to ONNX or a ``torch.export`` program, verified before it is reported.

    >>> import segattn
    >>> model = segattn.create_model("emanet", 11, backbone="resnet18c")
    >>> result = segattn.export(model, "emanet.onnx", size=(360, 480), dynamic=True)
    >>> print(result)        # path, opset, the sizes checked on ONNX Runtime and the largest error

``format="onnx"`` goes through ``torch.onnx.export(..., dynamo=True)``: opset 20 by default (portable:
softmax attention is decomposed into MatMul/Softmax), opset 23 on request (``scaled_dot_product_attention``
becomes ONNX's fused ``Attention`` op). ``format="pt2"`` writes a ``torch.export`` program
(``torch.export.save``), to be loaded with ``torch.export.load(path).module()`` or AOTInductor.

Every export is verified before :func:`export` returns: ONNX Runtime (CPU provider) or the loaded
program runs the written file on a seeded random image at the export size, and - with ``dynamic=True``
(height and width symbolic) - at a second size; each output must match the eager PyTorch model within
``atol + rtol * |reference|`` (defaults 1e-4 and 1e-3 on the logits). A failed check raises
:class:`ExportError` and leaves no file behind.

Adaptive average pooling to a fixed grid (PSPNet's PPM, APCNet, ANN's and OCNet's pyramids) is the
classic way an export silently bakes in the export size: its bins depend on the input size, and the
exporters compute them as constants. ``dynamic=True`` therefore either

- traces those calls through :func:`size_generic_adaptive_avg_pool2d` (``pooling="generic"``, the
  default): the same average written as two pooling matrices built from the symbolic size, exact
  for every size and checked at the second size; or
- refuses (``pooling="refuse"``) with :class:`ExportError` naming each layer and offering the
  fixed-size export.

Global pooling (grid 1x1: ASPP's image pooling, APCNet's guidance) is a plain mean at every size and
needs neither.
"""

from __future__ import annotations

import contextlib
import logging
import numbers
import os
import re
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from segattn.checks import NON_NEGATIVE, check_float

FORMATS = ("onnx", "pt2")
SUFFIXES = {"onnx": ".onnx", "pt2": ".pt2"}  # the file name each format is written under

# what torch's exporters print that concerns torch, not the user: the ONNX registry's note for every
# torchvision op it skips, and the deprecations inside torch's own code (LeafSpec, ...)
_TORCH_NOISE = re.compile(r"torchvision is not installed|Expect archive file to be a file ending in|"
                          r"Unable to load package\. f must be")
_NOISY_LOGGERS = ("torch.onnx._internal.exporter._registration", "torch.export.pt2_archive._package")
DEFAULT_OPSET = 20
FUSED_ATTENTION_OPSET = 23
DEFAULT_SIZE = (512, 512)
ATOL, RTOL = 1e-4, 1e-3
PathLike = Union[str, "os.PathLike[str]"]


class ExportError(ValueError):
    """An export that cannot be done as asked, or whose output does not match PyTorch's."""


@dataclass
class Check:
    """One verification run: input size, largest absolute error, the allowed bound, label agreement."""

    size: Tuple[int, int]
    max_abs_err: float
    bound: float
    label_agreement: float
    ok: bool

    def __str__(self) -> str:
        verdict = "ok" if self.ok else "FAILED"
        return (f"{self.size[0]}x{self.size[1]}: max |diff| {self.max_abs_err:.2e} (allowed {self.bound:.2e}), "
                f"labels agree on {100 * self.label_agreement:.2f} % - {verdict}")


@dataclass
class ExportResult:
    """What :func:`export` wrote and how it was verified."""

    path: str
    format: str
    size: Tuple[int, int]
    dynamic: bool
    opset: Optional[int]
    runtime: str
    checks: List[Check] = field(default_factory=list)
    generic_pooling: List[str] = field(default_factory=list)
    seconds: float = 0.0

    def __str__(self) -> str:
        what = f"{self.format}" + (f" opset {self.opset}" if self.opset else "")
        shape = "dynamic H x W" if self.dynamic else f"fixed {self.size[0]}x{self.size[1]}"
        lines = [f"{self.path}: {what}, {shape}, verified on {self.runtime} ({self.seconds:.1f} s)"]
        lines += [f"  {c}" for c in self.checks]
        if self.generic_pooling:
            lines.append("  size-generic adaptive pooling in: " + ", ".join(self.generic_pooling))
        return "\n".join(lines)


# ----- adaptive pooling ------------------------------------------------------------------------------

def _pool_matrix(n: Any, bins: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """(bins, n) matrix whose row i averages [floor(i n / bins), ceil((i + 1) n / bins)), as
    ``adaptive_avg_pool1d``; built from tensors only, so ``n`` may be a symbolic size."""
    i = torch.arange(bins, device=device)
    start = torch.div(i * n, bins, rounding_mode="floor")
    end = torch.div((i + 1) * n + bins - 1, bins, rounding_mode="floor")
    pos = torch.arange(n, device=device)
    inside = (pos[None, :] >= start[:, None]) & (pos[None, :] < end[:, None])
    return inside.to(dtype) / (end - start).to(dtype)[:, None]


def _output_size(output_size: Any, x: Tensor) -> Tuple[Any, Any]:
    if isinstance(output_size, int):
        return output_size, output_size
    oh, ow = output_size
    return (x.shape[-2] if oh is None else oh), (x.shape[-1] if ow is None else ow)


def size_generic_adaptive_avg_pool2d(x: Tensor, output_size: Any) -> Tensor:
    """``F.adaptive_avg_pool2d(x, output_size)`` as ``P_h X P_w^T`` with the (bh, H) and (bw, W) pooling
    matrices computed from ``x``'s size: the same bins and weights at every size (exact up to the order
    of the float summation), so an export with symbolic H, W stays right at other sizes.
    Shapes: (B, C, H, W) -> (B, C, bh, bw)."""
    bh, bw = _output_size(output_size, x)
    if bh == 1 and bw == 1:
        return x.mean((-2, -1), keepdim=True)
    ph = _pool_matrix(x.shape[-2], int(bh), x.dtype, x.device)
    pw = _pool_matrix(x.shape[-1], int(bw), x.dtype, x.device)
    return torch.matmul(torch.matmul(ph, x), pw.transpose(0, 1))


_ADAPTIVE = {F.adaptive_avg_pool2d: "average", F.adaptive_max_pool2d: "max",
             F.adaptive_avg_pool1d: "average", F.adaptive_max_pool1d: "max"}


class _ModuleStack:
    """Forward pre/post hooks that keep the qualified name of the module being run."""

    def __init__(self, model: nn.Module) -> None:
        self.stack: List[str] = []
        self.handles = []
        for name, module in model.named_modules():
            self.handles.append(module.register_forward_pre_hook(self._enter(name)))
            self.handles.append(module.register_forward_hook(self._leave))

    def _enter(self, name: str) -> Any:
        def hook(module: nn.Module, args: Any) -> None:
            self.stack.append(name)
        return hook

    def _leave(self, module: nn.Module, args: Any, out: Any) -> None:
        self.stack.pop()

    @property
    def current(self) -> str:
        return (self.stack[-1] if self.stack else "") or "(model)"

    def close(self) -> None:
        for h in self.handles:
            h.remove()


@dataclass
class PoolCall:
    layer: str
    kind: str
    output_size: Any
    input_size: Tuple[int, int]

    @property
    def is_global(self) -> bool:
        size = self.output_size
        return size == 1 or (isinstance(size, (tuple, list)) and all(s == 1 for s in size))

    def __str__(self) -> str:
        return f"{self.layer} (adaptive {self.kind} pooling to {self.output_size})"


class _RecordPooling(TorchFunctionMode):
    """Records every adaptive pooling call and the module it happens in (one eager forward)."""

    def __init__(self, stack: _ModuleStack) -> None:
        super().__init__()
        self.module_stack, self.calls = stack, []

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func in _ADAPTIVE:
            x = args[0]
            size = kwargs.get("output_size", args[1] if len(args) > 1 else None)
            self.calls.append(PoolCall(self.module_stack.current, _ADAPTIVE[func], size, tuple(x.shape[-2:])))
        return func(*args, **kwargs)


class _GenericPooling(TorchFunctionMode):
    """Routes ``F.adaptive_avg_pool2d`` through :func:`size_generic_adaptive_avg_pool2d` while tracing."""

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func is F.adaptive_avg_pool2d:
            return size_generic_adaptive_avg_pool2d(*args, **kwargs)
        return func(*args, **kwargs)


def adaptive_pooling_calls(model: nn.Module, size: Tuple[int, int] = (64, 64)) -> List[PoolCall]:
    """Every adaptive pooling call of one eval forward at ``size``, with the layer that makes it."""
    stack = _ModuleStack(model)
    try:
        with torch.no_grad(), _RecordPooling(stack) as rec:
            model(torch.zeros(1, _in_channels(model), *size))
    finally:
        stack.close()
    seen, out = set(), []
    for call in rec.calls:
        key = (call.layer, call.kind, str(call.output_size))
        if key not in seen:
            seen.add(key)
            out.append(call)
    return out


def _in_channels(model: nn.Module) -> int:
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return int(getattr(model, "in_channels", None) or (conv.in_channels if conv is not None else 3))


# ----- export ------------------------------------------------------------------------------------------

def _parse_size(size: Any) -> Tuple[int, int]:
    if isinstance(size, bool) or not isinstance(size, (str, int, tuple, list)):
        raise ExportError(f"size must be HxW, an int or (H, W), got {size!r}")
    if isinstance(size, str):
        parts = size.lower().replace(",", "x").split("x")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise ExportError(f"size must look like HxW with two integers >= 8 (e.g. 360x480), got {size!r}")
        size = (int(parts[0]), int(parts[1]))
    if isinstance(size, int):
        size = (size, size)
    h, w = (int(v) for v in size)
    if h < 8 or w < 8:
        raise ExportError(f"export size must be at least 8x8, got {h}x{w}")
    return h, w


def second_size(size: Tuple[int, int]) -> Tuple[int, int]:
    """The other size a dynamic export is checked at: about 3/4 of each side (plus 1 and 3, so that
    bins and strides do not line up by chance), or a few pixels more where that would be under 8."""
    h, w = (size[0] * 3) // 4 + 1, (size[1] * 3) // 4 + 3
    return (h if 8 <= h != size[0] else size[0] + 5), (w if 8 <= w != size[1] else size[1] + 7)


def _check(out: Tensor, ref: Tensor, size: Tuple[int, int], atol: float, rtol: float) -> Check:
    out, ref = out.float(), ref.float()
    if out.shape != ref.shape:
        return Check(size, float("inf"), 0.0, 0.0, False)
    diff = (out - ref).abs()
    bound = atol + rtol * ref.abs()
    agree = (out.argmax(1) == ref.argmax(1)).float().mean().item() if out.dim() == 4 else 1.0
    return Check(size, float(diff.max()), float(bound.max()), agree, bool((diff <= bound).all()))


def _onnx_program(model: nn.Module, x: Tensor, dynamic: bool, opset: int) -> Any:
    dims = ({2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO},) if dynamic else None
    try:
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise ImportError("ONNX export needs onnx and onnxscript (pip install 'segattn[onnx]')") from err
    with _exporter_errors(f"ONNX opset {opset}"):
        return torch.onnx.export(model, (x,), dynamo=True, opset_version=opset, dynamic_shapes=dims,
                                 input_names=["image"], output_names=["logits"], verbose=False)


@contextlib.contextmanager
def _exporter_errors(target: str) -> Iterator[None]:
    """An exporter failure (an op without a translation, a data-dependent shape) as one
    :class:`ExportError` line naming the first cause, instead of the exporter's long report."""
    try:
        yield
    except ExportError:
        raise
    except Exception as exc:
        cause: BaseException = exc
        while cause.__cause__ is not None:
            cause = cause.__cause__
        first = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:300]
        raise ExportError(f"the model cannot be exported to {target}: {type(cause).__name__}: {first}") from exc


def _ort_session(path: str, threads: int = 0) -> Any:
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise ImportError("verifying an ONNX export needs onnxruntime (pip install 'segattn[onnx]')") from err
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def _run_ort(session: Any, x: Tensor) -> Tensor:
    name = session.get_inputs()[0].name
    return torch.from_numpy(session.run(None, {name: x.numpy()})[0])


class _DropTorchNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _TORCH_NOISE.search(record.getMessage())


@contextlib.contextmanager
def quiet_torch_export() -> Iterator[None]:
    """Hide torch's own export chatter (see ``_TORCH_NOISE``) and the Future/Deprecation warnings raised
    inside torch, onnx and onnxscript; warnings about the user's model and every error still show."""
    noise = _DropTorchNoise()
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    for logger in loggers:
        logger.addFilter(noise)
    try:
        with warnings.catch_warnings():
            for category in (FutureWarning, DeprecationWarning):
                warnings.filterwarnings("ignore", category=category, module=r"(torch|onnx|onnxscript|copyreg)(\.|$)")
            yield
    finally:
        for logger in loggers:
            logger.removeFilter(noise)


def check_output_name(path: PathLike, fmt: str) -> None:
    """:class:`ExportError` unless ``path`` ends with the suffix of ``fmt`` (``.onnx`` / ``.pt2``)."""
    suffix = SUFFIXES.get(str(fmt).lower())
    if suffix and not os.fspath(path).lower().endswith(suffix):
        what = "an ONNX model" if suffix == ".onnx" else "a torch.export archive"
        raise ExportError(f"output {os.fspath(path)}: --format {fmt} writes {what}, whose file name must end "
                          f"in {suffix}; got {os.path.splitext(os.fspath(path))[1] or 'no suffix'}")


def _write_atomic(path: str, write: Any) -> None:
    folder = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(folder, exist_ok=True)
    suffix = os.path.splitext(path)[1]  # the loaders check it (torch.export.load wants .pt2)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=f".tmp{suffix}", dir=folder)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def export(model: nn.Module, out: PathLike, *, format: str = "onnx", size: Any = DEFAULT_SIZE,
           dynamic: bool = False, opset: Optional[int] = None, pooling: str = "generic",
           atol: float = ATOL, rtol: float = RTOL, overwrite: bool = False, check_sizes: Sequence[Any] = (),
           seed: int = 0) -> ExportResult:
    """Export ``model`` (eval mode, batch 1, float32 CPU) to ``out`` and verify it (see the module doc).

    Args:
        format: ``"onnx"`` or ``"pt2"``.
        size: export size ``(H, W)``, an int or ``"HxW"``.
        dynamic: height and width symbolic; verified at ``size`` and at :func:`second_size`.
        opset: ONNX opset (default 20; 23 for the fused ``Attention`` op).
        pooling: with ``dynamic``, ``"generic"`` (size-generic adaptive pooling) or ``"refuse"``.
        atol: absolute part of the verification bound ``atol + rtol * |reference|`` on every logit.
        rtol: relative part of that bound.
        overwrite: replace an existing ``out``.
        check_sizes: further sizes to verify (dynamic exports only).
    """
    if not isinstance(model, nn.Module):  # was: "'str' object has no attribute 'eval'"
        raise ExportError(f"export: model must be a torch.nn.Module (e.g. segattn.create_model(...) or "
                          f"segattn.from_pretrained(...)), got {type(model).__name__}")
    check_float("atol", atol, NON_NEGATIVE, what="export")
    check_float("rtol", rtol, NON_NEGATIVE, what="export")
    start = time.time()
    fmt = str(format).lower()
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {format!r}; expected one of {', '.join(FORMATS)}")
    if fmt != "onnx" and opset is not None:
        raise ExportError("--opset applies to ONNX exports only")
    if pooling not in ("generic", "refuse"):
        raise ExportError(f"pooling must be 'generic' or 'refuse', got {pooling!r}")
    if opset is not None and (isinstance(opset, bool) or not isinstance(opset, numbers.Integral)):
        raise ExportError(f"ONNX opset must be an integer in 18..23, got {opset!r} ({type(opset).__name__})")
    opset = (DEFAULT_OPSET if opset is None else int(opset)) if fmt == "onnx" else None
    if opset is not None and not 18 <= opset <= 23:
        raise ExportError(f"ONNX opset must lie in 18..23 (20 portable, 23 fused Attention), got {opset}")
    path = os.fspath(out)
    if os.path.isdir(path):
        raise ExportError(f"output {path} is a folder, expected a file name")
    check_output_name(path, fmt)
    if os.path.exists(path) and not overwrite:
        raise ExportError(f"output {path} already exists; pass --overwrite to replace it")
    hw = _parse_size(size)
    model = model.eval().float().cpu()
    generic: List[str] = []
    if dynamic:
        grids = [c for c in adaptive_pooling_calls(model, (min(hw[0], 97), min(hw[1], 97))) if not c.is_global]
        fixed = [c for c in grids if c.kind != "average"]
        if fixed or (grids and pooling == "refuse"):
            layers = "; ".join(str(c) for c in (fixed or grids))
            raise ExportError(f"{type(model).__name__} {getattr(model, 'config', {}).get('name', '')} cannot be "
                              f"exported with dynamic height/width: {layers} fixes its bins at the export size. "
                              f"Export at a fixed size instead (--size {hw[0]}x{hw[1]} without --dynamic)"
                              + ("" if fixed else ", or use the size-generic pooling (pooling='generic')"))
        generic = [str(c) for c in grids]
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, _in_channels(model), *hw, generator=gen)
    sizes = [hw] + ([second_size(hw)] + [_parse_size(s) for s in check_sizes] if dynamic else [])
    inputs = [x] + [torch.randn(1, x.shape[1], *s, generator=gen) for s in sizes[1:]]
    with torch.no_grad():
        refs = [model(v) for v in inputs]
    mode = _GenericPooling() if generic else None

    if fmt == "onnx":
        def write(tmp: str) -> None:
            with mode or contextlib.nullcontext():
                program = _onnx_program(model, x, dynamic, opset)
            program.save(tmp)
            run = _ort_session(tmp)
            checks.extend(_check(_run_checked(lambda v: _run_ort(run, v), v, s), r, s, atol, rtol)
                          for v, r, s in zip(inputs, refs, sizes))
            _raise_if_failed(checks, path)
        runtime = _ort_version()
    else:
        def write(tmp: str) -> None:
            dims = ({2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO},) if dynamic else None
            with _exporter_errors("a torch.export program"), (mode or contextlib.nullcontext()):
                program = torch.export.export(model, (x,), dynamic_shapes=dims)
            torch.export.save(program, tmp)
            loaded = torch.export.load(tmp).module()
            with torch.no_grad():
                checks.extend(_check(_run_checked(loaded, v, s), r, s, atol, rtol)
                              for v, r, s in zip(inputs, refs, sizes))
            _raise_if_failed(checks, path)
        runtime = f"torch.export.load (torch {torch.__version__})"
    checks: List[Check] = []
    with quiet_torch_export():
        _write_atomic(path, write)
    return ExportResult(path, fmt, hw, dynamic, opset, runtime, checks, generic, time.time() - start)


def _run_checked(run: Any, x: Tensor, size: Tuple[int, int]) -> Tensor:
    """``run(x)``; an exported file that does not run at ``size`` is an :class:`ExportError`."""
    try:
        return run(x)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise ExportError(f"the exported file does not run at {size[0]}x{size[1]}: {first} (no file written)") from None


def _raise_if_failed(checks: List[Check], path: str) -> None:
    bad = [c for c in checks if not c.ok]
    if bad:
        raise ExportError(f"export to {path} does not match PyTorch: " + "; ".join(str(c) for c in bad)
                          + " (no file written)")


def _ort_version() -> str:
    try:
        import onnxruntime as ort
    except ImportError:  # pragma: no cover - checked before
        return "onnxruntime"
    return f"ONNX Runtime {ort.__version__} CPU"
