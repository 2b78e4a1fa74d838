"""Matrix-decomposition mapper: Hamburger's NMF, vector quantisation (VQ) and concept decomposition (CD).

``MatrixDecompositionMapper`` factorises the (non-negative, for NMF) feature matrix ``Z`` (D, N) of
each sample as ``Z ~ B C^T`` with R bases ``B`` (D, R) and coefficients ``C`` (N, R), by T iterations
from an initial ``B`` (Geng et al., ICLR 2021, "Is Attention Better Than Matrix Decomposition?").
As a ``segattn.lowrank`` mapper it returns ``nodes = B`` and ``assignment = C^T``, so that
``TransposeReverse()`` reconstructs ``B C^T``.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segattn.checks import NON_NEGATIVE, POSITIVE, checked
from segattn.lowrank.functional import flatten
from segattn.lowrank.mappers import MapResult
from segattn.ops.attention import full_precision, upcast

METHODS = ("nmf", "vq", "cd")
GRADS = ("one_step", "bptt")
INITS = ("random", "stored")


def _choice(name: str, value: str, allowed: Tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(repr(a) for a in allowed)}, got {value!r}")
    return value


def nmf_coef_update(x: Tensor, bases: Tensor, coef: Tensor, eps: float) -> Tensor:
    """Multiplicative update ``C <- C * (Z^T B) / (C B^T B + eps)``; ``x`` (B, D, N), ``bases`` (B, D, R), ``coef`` (B, N, R)."""
    numerator = torch.matmul(x.transpose(1, 2), bases)
    denominator = torch.matmul(coef, torch.matmul(bases.transpose(1, 2), bases))
    return coef * numerator / (denominator + eps)


def nmf_bases_update(x: Tensor, bases: Tensor, coef: Tensor, eps: float) -> Tensor:
    """Multiplicative update ``B <- B * (Z C) / (B C^T C + eps)``."""
    numerator = torch.matmul(x, coef)
    denominator = torch.matmul(bases, torch.matmul(coef.transpose(1, 2), coef))
    return bases * numerator / (denominator + eps)


def cosine_coef(x: Tensor, bases: Tensor, inv_t: float, normalize_bases: bool, eps: float) -> Tensor:
    """``softmax_R(inv_t * xhat^T b)`` with ``xhat`` the pixels l2-normalised over D (VQ / CD E-step)."""
    xn = F.normalize(x, dim=1)
    bn = F.normalize(bases, dim=1, eps=eps) if normalize_bases else bases
    return torch.softmax(inv_t * torch.matmul(xn.transpose(1, 2), bn), dim=2)


class MatrixDecompositionMapper(nn.Module):
    """R bases and coefficients of ``Z ~ B C^T`` by T iterations (Hamburger's "ham"), per sample.

    Shapes: ``x`` (B, D, H, W) -> ``MapResult(map = C^T (B, R, N), nodes = B (B, D, R),
    assignment = C^T)``; ``TransposeReverse()`` then gives ``B C^T`` (B, D, H, W). Math in float32
    (``full_precision``) for half inputs. Common start: ``C = softmax_R(inv_t Z^T B0)``.

    ``method``:

    * ``"nmf"`` (non-negative ``Z``; ``inv_t`` is 1 as the official code): T multiplicative updates
      ``C <- C (Z^T B) / (C B^T B + eps)`` then ``B <- B (Z C) / (B C^T C + eps)``; the final
      coefficients are one more ``C`` update. ``B0 ~ U(0, 1)``, l2-normalised over D.
    * ``"vq"`` (cosine soft k-means): ``C = softmax_R(inv_t xhat^T bhat)``, ``C <- C / sum_N C``,
      ``B = Z C``; final ``C = softmax_R(inv_t xhat^T bhat)`` with ``xhat = x / (1e-6 + ||x||)``
      (in the iterations ``x / max(||x||, 1e-12)``, as the official code). ``B0 ~ N(0, 1)`` normalised.
    * ``"cd"`` (concept decomposition): ``C = softmax_R(inv_t xhat^T B)``, ``C <- C / sum_N C``,
      ``B = l2norm_D(Z C)``; final ``C = Z^T B (B^T B + beta I)^-1`` (ridge regression).

    Iterations: ``train_steps`` (6) in training, ``eval_steps`` (7) in eval (official and mmseg).
    Gradient (``grad``): ``"one_step"`` (the paper; official ``@torch.no_grad()`` on the iterations)
    runs the T iterations without autograd in training, so the gradient reaches ``Z`` only through
    the final coefficient update; ``"bptt"`` back-propagates through every iteration (what mmseg's,
    SegNeXt's and the authors' light heads do: their ``no_grad`` is commented out or absent). In
    eval mode the forward is always differentiated exactly (the cut is a training device).

    Initial bases (``init``): ``"random"`` (official ``RAND_INIT=True``) draws fresh bases for each
    sample at every *training* forward from the global RNG (``torch.manual_seed`` makes a run
    reproducible); in eval it uses the ``bases`` buffer (D, R), drawn once at construction and saved
    with the model, so that inference is deterministic and batch-independent.
    ``random_eval=True`` draws fresh bases in eval too, as the official code and mmseg do (their
    test-time output is stochastic). ``"stored"`` uses the buffer in both modes (``RAND_INIT=False``;
    the official online update of the stored bases with ``ETA`` is not implemented).

    MACs (batch 1, D channels, N pixels, R bases, T steps): start ``N D R``; NMF
    ``T (2 N D R + 2 N R^2 + 2 D R^2) + N D R + N R^2 + D R^2``; VQ ``2 T N D R + N D R``;
    CD ``2 T N D R + N D R + D R^2`` (the R x R solve is not counted).
    """

    @checked(train_steps=NON_NEGATIVE, eval_steps=NON_NEGATIVE, inv_t=POSITIVE, eps=NON_NEGATIVE)
    def __init__(
        self,
        channels: int,
        num_bases: int = 64,
        *,
        method: str = "nmf",
        train_steps: int = 6,
        eval_steps: int = 7,
        grad: str = "one_step",
        init: str = "random",
        random_eval: bool = False,
        inv_t: float = 100.0,
        beta: float = 0.1,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        if channels < 1 or num_bases < 1 or train_steps < 0 or eval_steps < 0:
            raise ValueError(f"channels and num_bases must be >= 1 and the steps >= 0, got {channels}, {num_bases}, "
                             f"{train_steps}, {eval_steps}")
        self.method = _choice("method", method, METHODS)
        self.grad = _choice("grad", grad, GRADS)
        self.init = _choice("init", init, INITS)
        self.channels, self.num_nodes = channels, num_bases
        self.train_steps, self.eval_steps, self.random_eval = train_steps, eval_steps, random_eval
        self.inv_t = 1.0 if method == "nmf" else float(inv_t)
        self.beta, self.eps = beta, eps
        self.register_buffer("bases", self.draw_bases(1, torch.device("cpu"), torch.float32)[0])

    def draw_bases(self, batch: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """Fresh (batch, D, R) bases, l2-normalised over D: U(0, 1) for NMF, N(0, 1) for VQ / CD."""
        shape = (batch, self.channels, self.num_nodes)
        draw = torch.rand if self.method == "nmf" else torch.randn
        return F.normalize(draw(shape, device=device, dtype=dtype), dim=1)

    def initial_bases(self, x: Tensor) -> Tensor:
        """(B, D, R) starting bases for ``x`` (B, D, N) (see the class docstring)."""
        fresh = self.init == "random" and (self.training or self.random_eval)
        if fresh:
            return self.draw_bases(x.shape[0], x.device, x.dtype)
        return upcast(self.bases).to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)

    def step(self, x: Tensor, bases: Tensor, coef: Tensor) -> Tuple[Tensor, Tensor]:
        """One iteration: ``(bases, coef)`` -> ``(bases, coef)``."""
        if self.method == "nmf":
            coef = nmf_coef_update(x, bases, coef, self.eps)
            return nmf_bases_update(x, bases, coef, self.eps), coef
        coef = cosine_coef(x, bases, self.inv_t, self.method == "vq", self.eps)
        coef = coef / (self.eps + coef.sum(dim=1, keepdim=True))
        bases = torch.matmul(x, coef)
        return (F.normalize(bases, dim=1, eps=self.eps) if self.method == "cd" else bases), coef

    def final_coef(self, x: Tensor, bases: Tensor, coef: Tensor, cut: bool = False) -> Tensor:
        """The coefficients computed with gradient after the iterations (the one-step gradient)."""
        if self.method == "nmf":
            return nmf_coef_update(x, bases, coef, self.eps)
        if self.method == "vq":  # official: x / (1e-6 + ||x||), the norm without gradient under the cut
            with torch.set_grad_enabled(torch.is_grad_enabled() and not cut):
                norm = torch.linalg.vector_norm(x, dim=1, keepdim=True)
            xn = x / (self.eps + norm)
            bn = F.normalize(bases, dim=1, eps=self.eps)
            return torch.softmax(self.inv_t * torch.matmul(xn.transpose(1, 2), bn), dim=2)
        gram = torch.matmul(bases.transpose(1, 2), bases)
        ridge = gram + self.beta * torch.eye(self.num_nodes, dtype=gram.dtype, device=gram.device)
        xb = torch.matmul(x.transpose(1, 2), bases)  # (B, N, R)
        return torch.linalg.solve(ridge, xb.transpose(1, 2)).transpose(1, 2)  # ridge is symmetric

    def decompose(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """``(bases (B, D, R), coef (B, N, R))`` of ``x`` (B, D, N)."""
        bases = self.initial_bases(x)
        steps = self.train_steps if self.training else self.eval_steps
        cut = self.training and self.grad == "one_step"
        with torch.set_grad_enabled(torch.is_grad_enabled() and not cut):
            coef = torch.softmax(self.inv_t * torch.matmul(x.transpose(1, 2), bases), dim=2)
            for _ in range(steps):
                bases, coef = self.step(x, bases, coef)
        return bases, self.final_coef(x, bases, coef, cut)

    def forward(self, x: Tensor, value: Optional[Tensor] = None) -> MapResult:
        if value is not None:
            raise ValueError("MatrixDecompositionMapper factorises x itself; a separate value is not supported")
        if x.shape[1] != self.channels:
            raise ValueError(f"MatrixDecompositionMapper expects {self.channels} channels, got {x.shape[1]}")
        with full_precision(x.device):
            bases, coef = self.decompose(upcast(flatten(x)))
        coef_t = coef.transpose(1, 2)
        return MapResult(coef_t, bases, coef_t)

    def macs(self, height: int, width: int, value_channels: int) -> int:
        n, d, r = height * width, self.channels, self.num_nodes
        t = self.train_steps if self.training else self.eval_steps
        if self.method == "nmf":
            per_step, final = 2 * n * d * r + 2 * n * r * r + 2 * d * r * r, n * d * r + n * r * r + d * r * r
        elif self.method == "vq":
            per_step, final = 2 * n * d * r, n * d * r
        else:
            per_step, final = 2 * n * d * r, n * d * r + d * r * r
        return n * d * r + t * per_step + final

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, num_bases={self.num_nodes}, method={self.method!r}, "
                f"train_steps={self.train_steps}, eval_steps={self.eval_steps}, grad={self.grad!r}, "
                f"init={self.init!r}, random_eval={self.random_eval}")
