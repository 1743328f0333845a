"""Linear-algebra helpers shared by the merge methods and diagnostics.

- `theta_plus`: θ₀ + λ·τ, the merged model's weights (engine and λ selection alike).
- `polar_factor`: the one orthogonaliser used by TSV-M, Iso-CTS and BoostedTSV-M (SVD Procrustes or Newton–Schulz).
- `thin_svd`: SVD in a chosen working precision, cast back.
- `top_singular_triplets`: the k largest singular triplets (and the whole spectrum), through the smaller Gram matrix.
- `effective_rank`: entropy-based effective rank (Roy & Vetterli, EUSIPCO 2007).
- `streaming_order_statistics`: exact k-th smallest values over a stream of tensors (two passes, radix select on the
  float32 bit pattern), used by model-wide ("global") pre-passes.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import functools
from typing import Callable, Iterable, Iterator

import numpy as np

from asrmerge.lazy_import import lazy_import
from asrmerge.merging.runtime import one_blas_thread

torch = lazy_import("torch")  # executed on first use (asrmerge.lazy_import)
scipy_cython_lapack = lazy_import("scipy.linalg.cython_lapack")

#: Quintic Newton–Schulz coefficients (a, b, c) (Muon; the seed paper's NS orthogonalisation).
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_EPS = 1e-7

ORTHOGONALISERS = ("svd", "newton_schulz")


def theta_plus(theta0: torch.Tensor, tau: torch.Tensor, lam: float) -> torch.Tensor:
    """θ₀ + λ·τ in one pass (a new tensor): the merged model's weights, identically for export, one-pass merges and
    the λ sweep on validation (asrmerge.evaluation.selection), which must not import the engine for it."""
    return torch.add(theta0, tau, alpha=float(lam))

# Diagnostics hook: when a recorder is active, every Newton–Schulz polar factor reports max |σ_i(Q) − 1|.
_NS_RECORDER: contextvars.ContextVar[list[float] | None] = contextvars.ContextVar("ns_recorder", default=None)


@contextlib.contextmanager
def record_orthogonality() -> Iterator[list[float]]:
    """Collect max |σ_i(Q) − 1| of every Newton–Schulz factor computed inside the block (costs one svdvals each)."""
    store: list[float] = []
    token = _NS_RECORDER.set(store)
    try:
        yield store
    finally:
        _NS_RECORDER.reset(token)


def thin_svd(x: torch.Tensor, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """torch.linalg.svd(x, full_matrices=False) computed in `dtype` (float32 or float64; None: float32), results cast
    to x's dtype.

    Half-precision inputs are computed in at least float32 (LAPACK/cuSOLVER have no half SVD). A float32 SVD that
    LAPACK cannot converge is computed again in float64: divide and conquer (gesdd) can fail on matrices whose
    singular values cluster, such as the nearly orthonormal bases that TSV-M and Iso-CTS orthogonalise (seen at
    Whisper-small scale with one LAPACK thread; FusionBench's iso_cts stops on the same error).
    """
    work = dtype if dtype in (torch.float32, torch.float64) else torch.float32
    out_dtype = _float_out(x)
    # LAPACK is ~3x faster on the tall orientation (CPU, 1280x5120); svd(Xᵀ) = V S Uᵀ gives the same triplets up to a
    # joint sign of each (u_i, v_i) pair, which every method here is invariant to.
    wide = x.shape[-2] < x.shape[-1]
    tall = x.mT if wide else x
    try:
        u, s, vh = torch.linalg.svd(tall.to(work).contiguous(), full_matrices=False)
    except torch.linalg.LinAlgError:
        if work == torch.float64:
            raise
        u, s, vh = torch.linalg.svd(tall.to(torch.float64).contiguous(), full_matrices=False)
    if wide:
        u, vh = vh.mT, u.mT
    return u.to(out_dtype), s.to(out_dtype), vh.to(out_dtype)


#: The Gram–eigh paths square the condition number of what they decompose, so they are taken only while the smallest
#: singular value they need stays above this share of the largest: float64 eigh then gives every value and vector to
#: about 1e-16·(σ_max/σ_min)² ≤ 1e-8 relative, below float32 round-off. Below it the direct SVD runs.
GRAM_MIN_SINGULAR_RATIO = 1e-4


def _float_out(x: torch.Tensor) -> torch.dtype:
    """The dtype decompositions return: x's for float32/float64, float32 for half precision."""
    return x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32


@functools.cache
def _lapack_dsyevr() -> Callable[..., None]:
    """LAPACK's dsyevr from scipy.linalg.cython_lapack (scipy's public C-level LAPACK, whichever library scipy links),
    called through ctypes, which releases the GIL for the call: scipy.linalg.eigh holds it, so the merge's workers
    would take their eigendecompositions one at a time."""
    capi = ctypes.pythonapi
    capi.PyCapsule_GetName.restype, capi.PyCapsule_GetName.argtypes = ctypes.c_char_p, [ctypes.py_object]
    capi.PyCapsule_GetPointer.restype = ctypes.c_void_p
    capi.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    capsule = scipy_cython_lapack.__pyx_capi__["dsyevr"]
    address = capi.PyCapsule_GetPointer(capsule, capi.PyCapsule_GetName(capsule))
    return ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * 21)(address)


def _symmetric_eigh(gram: np.ndarray, top: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(ascending eigenvalues, eigenvectors as columns) of a symmetric float64 matrix, all of them or the `top`
    largest, by LAPACK dsyevr (MRRR for all, bisection and inverse iteration for a few); gram is overwritten."""
    n = gram.shape[0]
    count = n if top is None else top
    ints = np.zeros(6, dtype=np.intc)  # n, lda = ldz, il, iu, m (found), info
    ints[:4] = n, n, n - count + 1, n
    bounds = np.zeros(3)  # vl, vu (unused with a range by index), abstol (0: LAPACK's default)
    values, vectors = np.empty(n), np.empty((count, n))  # C-ordered count × n = column-major n × count
    support = np.empty(2 * max(count, 1), dtype=np.intc)
    query, iquery, sizes = np.empty(1), np.empty(1, dtype=np.intc), np.full(2, -1, dtype=np.intc)

    def call(work: np.ndarray, iwork: np.ndarray) -> None:
        _lapack_dsyevr()(b"V", b"A" if top is None else b"I", b"L", ints[0:].ctypes.data, gram.ctypes.data,
                         ints[1:].ctypes.data, bounds[0:].ctypes.data, bounds[1:].ctypes.data, ints[2:].ctypes.data,
                         ints[3:].ctypes.data, bounds[2:].ctypes.data, ints[4:].ctypes.data, values.ctypes.data,
                         vectors.ctypes.data, ints[1:].ctypes.data, support.ctypes.data, work.ctypes.data,
                         sizes[0:].ctypes.data, iwork.ctypes.data, sizes[1:].ctypes.data, ints[5:].ctypes.data)

    call(query, iquery)  # workspace query (lwork = liwork = -1)
    sizes[:] = int(query[0]), int(iquery[0])
    call(np.empty(sizes[0]), np.empty(sizes[1], dtype=np.intc))
    if ints[5] != 0 or ints[4] != count:
        raise np.linalg.LinAlgError(f"LAPACK dsyevr: info {ints[5]}, {ints[4]} of {count} eigenpairs")
    return values[:count], vectors.T


def _gram_eigh(x64: torch.Tensor, top: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (descending, clamped at 0) and eigenvectors of the smaller Gram matrix of a 2-D float64 x64 (xᵀx for
    a tall x, xxᵀ for a wide one): all of them, or the `top` largest.

    On CPU: the Gram by numpy (SYRK, half the work of a GEMM) and LAPACK's dsyevr (`_symmetric_eigh`), which for the
    top eigenpairs never forms the others, one BLAS thread per call and without the GIL, so that the merge's workers
    run side by side; measured on one core for a 3072×768 x and the top 76: about 0.18 s against 0.33 s for torch's
    GEMM + syevd. Elsewhere torch.linalg.eigh.
    """
    n = min(x64.shape)
    wide = x64.shape[0] < x64.shape[1]
    if x64.device.type != "cpu":
        values, vectors = torch.linalg.eigh(x64 @ x64.mT if wide else x64.mT @ x64)
        if top is not None:
            values, vectors = values[n - top :], vectors[:, n - top :]
    else:
        array = x64.contiguous().numpy()
        _lapack_dsyevr()  # loads scipy's LAPACK first: one_blas_thread pins the BLAS libraries loaded when first used
        with one_blas_thread():
            gram = array @ array.T if wide else array.T @ array
            values, vectors = (torch.from_numpy(a) for a in _symmetric_eigh(gram, top))
    return values.flip(0).clamp_min(0), vectors.flip(1)


def top_singular_triplets(
    x: torch.Tensor, k: int, dtype: torch.dtype | None = None, *, whole_spectrum: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(U_k, S_k, Vᵀ_k, S): the k largest singular triplets of a 2-D x and, with `whole_spectrum`, its whole spectrum
    (descending; else None), in x's dtype (float32 for half inputs); k ≤ min(m, n).

    dtype float64: the float64 SVD, truncated. Otherwise, in place of a float32 SVD: the top-k eigenpairs of the
    smaller Gram matrix in float64 (`_gram_eigh`; V_k = its top eigenvectors, S = √λ, U_k = X V_k / S_k — the same
    triplets to float32 round-off up to a joint sign per pair, in about a third of the float32 SVD's time for a
    768×3072 matrix), or thin_svd where σ_k < GRAM_MIN_SINGULAR_RATIO·σ_1 (a rank-deficient or ill-conditioned top-k).
    """
    if dtype == torch.float64 or k == 0:
        u, s, vh = thin_svd(x, dtype)
        return u[:, :k], s[:k], vh[:k], s if whole_spectrum else None
    wide = x.shape[-2] < x.shape[-1]
    x64 = x.to(torch.float64)
    values, vectors = _gram_eigh(x64, None if whole_spectrum else k)
    spectrum = values.sqrt()
    if not spectrum[k - 1] > GRAM_MIN_SINGULAR_RATIO * spectrum[0]:
        u, s, vh = thin_svd(x, dtype)
        return u[:, :k], s[:k], vh[:k], s if whole_spectrum else None
    right = vectors[:, :k]
    left = ((x64.mT if wide else x64) @ right) / spectrum[:k]
    u, vh = (right, left.mT) if wide else (left, right.mT)
    out = _float_out(x)
    return (u.to(out).contiguous(), spectrum[:k].to(out), vh.to(out).contiguous(),
            spectrum.to(out) if whole_spectrum else None)


def svd_polar_factor(x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """U Vᵀ of the thin SVD of a 2-D x (the reference's Procrustes), in x's dtype (float32 for half inputs).

    dtype float64: from the float64 SVD. Otherwise from the eigendecomposition of the smaller Gram matrix in float64
    (`_gram_eigh`), Q = X·(W Λ^-½ Wᵀ) (the same factor to float32 round-off, a fraction of the SVD's cost for a long
    matrix), or from the SVD where σ_min < GRAM_MIN_SINGULAR_RATIO·σ_max (x rank-deficient: the factor is not unique).
    """
    out = _float_out(x)
    if dtype != torch.float64 and x.numel():
        values, vectors = _gram_eigh(x.to(torch.float64))
        if values[-1] > GRAM_MIN_SINGULAR_RATIO ** 2 * values[0]:
            whitening = ((vectors * values.rsqrt()) @ vectors.mT).to(torch.float32)
            wide = x.shape[-2] < x.shape[-1]
            x32 = x.to(torch.float32)
            q = whitening @ x32 if wide else x32 @ whitening
            return q.to(out).contiguous()
    u, _, vh = thin_svd(x, dtype)
    return (u @ vh).to(out)


def singular_values(x: torch.Tensor) -> torch.Tensor:
    """torch.linalg.svdvals in float32, on the faster (tall) orientation."""
    x = x.to(torch.float32)
    return torch.linalg.svdvals(x.mT.contiguous() if x.shape[-2] < x.shape[-1] else x)


def newton_schulz(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Approximate polar factor of a 2-D matrix by the quintic Newton–Schulz iteration, in float32.

    X = G/(‖G‖_F + 1e-7); work in the wide orientation (rows ≤ cols); `steps` times X ← aX + (bA + cA²)X with A = XXᵀ;
    transpose back. Singular values land near 1 (roughly 0.68–1.2 after 5 steps for well-conditioned inputs), not at 1.
    """
    if g.ndim != 2:
        raise ValueError(f"newton_schulz needs a 2-D matrix, got shape {tuple(g.shape)}")
    a, b, c = NS_COEFFICIENTS
    x = g.to(torch.float32)
    transposed = x.shape[0] > x.shape[1]
    if transposed:
        x = x.mT
    x = x / (torch.linalg.matrix_norm(x) + NS_EPS)
    for _ in range(steps):
        gram = x @ x.mT
        poly = b * gram + c * (gram @ gram)
        x = a * x + poly @ x
    if transposed:
        x = x.mT
    return x.contiguous()


def polar_factor(
    x: torch.Tensor, method: str = "svd", steps: int = 5, svd_dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Orthogonal polar factor Q of a 2-D matrix (the nearest matrix with orthonormal rows/columns, Procrustes).

    method="svd": `svd_polar_factor` (U Vᵀ of the thin SVD, the reference: TSV-M `compute_procrustes`, Iso-CTS),
    float64 SVD when `svd_dtype` is float64.
    method="newton_schulz": `newton_schulz(x, steps)` in float32.
    The result has x's dtype (float32 for half inputs).
    """
    out_dtype = _float_out(x)
    if method == "svd":
        return svd_polar_factor(x, svd_dtype)
    if method == "newton_schulz":
        q = newton_schulz(x, steps)
        store = _NS_RECORDER.get()
        if store is not None:
            store.append(orthogonality_error(q, active=_active_rank(x)))
        return q.to(out_dtype)
    raise ValueError(f"unknown orthogonaliser {method!r}; known: {', '.join(ORTHOGONALISERS)}")


def _active_rank(g: torch.Tensor) -> int:
    """Upper bound on rank(G): min(#nonzero rows, #nonzero columns) (unused TSV-M slots are zero vectors)."""
    rows = int((torch.count_nonzero(g, dim=1) > 0).sum())
    cols = int((torch.count_nonzero(g, dim=0) > 0).sum())
    return min(rows, cols)


def orthogonality_error(q: torch.Tensor, active: int | None = None) -> float:
    """max_i |σ_i(Q) − 1| over the `active` largest singular values of Q (default all min(m, n))."""
    s = singular_values(q)
    if active is not None:
        s = s[:active]
    if s.numel() == 0:
        return 0.0
    return float((s - 1).abs().max())


def effective_rank(singular_values: torch.Tensor) -> float:
    """Entropy effective rank exp(−Σ p_i log p_i), p_i = σ_i / Σσ (Roy & Vetterli 2007); 0 for a zero matrix."""
    s = singular_values.to(torch.float64).clamp_min(0)
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


# ---------------------------------------------------------------------------------------------------------------
# Exact streaming order statistics (radix select on the float32 bit pattern).


def _order_key(values: torch.Tensor) -> torch.Tensor:
    """Map float32 values to int64 keys in [0, 2³²) with the same order (−0.0 just below +0.0)."""
    bits = values.to(torch.float32).contiguous().view(torch.int32).to(torch.int64)
    magnitude = bits & 0x7FFFFFFF
    return torch.where(bits >= 0, bits + (1 << 31), (1 << 31) - 1 - magnitude)


def _key_to_float(key: torch.Tensor) -> torch.Tensor:
    bits = torch.where(key >= (1 << 31), key - (1 << 31), ((1 << 31) - 1 - key) - (1 << 31))
    return bits.to(torch.int32).view(torch.float32)


def streaming_order_statistics(
    chunks: Callable[[], Iterable[torch.Tensor]], positions: torch.Tensor
) -> torch.Tensor:
    """Exact order statistics of T value streams, without holding a stream in memory.

    Args:
        chunks: zero-argument callable; each call yields tensors of shape (T, n_i) (row t belongs to stream t).
            It is called twice.
        positions: int64 (T, P), 0-based ranks in ascending order (0 = minimum, N − 1 = maximum, N = Σ n_i).

    Returns:
        float32 (T, P): the values at those ranks, identical to `torch.sort(all_values_t)[positions[t]]`.

    Method: pass 1 histograms the top 16 bits of an order-preserving 32-bit key; pass 2 histograms the low 16 bits of
    the values inside each selected top bucket. Memory O(T·P·65536); cost two reads of the stream.
    """
    positions = positions.to(torch.int64).cpu()
    n_streams, n_pos = positions.shape
    high_hist = torch.zeros(n_streams, 1 << 16, dtype=torch.int64)
    total = 0
    for chunk in chunks():
        keys = _order_key(chunk.reshape(n_streams, -1)).cpu()
        total += keys.shape[1]
        for t in range(n_streams):
            high_hist[t] += torch.bincount(keys[t] >> 16, minlength=1 << 16)
    if total == 0 or int(positions.min()) < 0 or int(positions.max()) >= total:
        raise ValueError(f"order-statistic positions must lie in [0, {total}); got {positions.tolist()}")
    cum = high_hist.cumsum(dim=1)
    bucket = torch.searchsorted(cum, positions + 1)  # first bucket whose cumulative count exceeds the rank
    below = torch.where(bucket > 0, cum.gather(1, (bucket - 1).clamp_min(0)), torch.zeros_like(bucket))
    rank_in_bucket = positions - below
    low_hist = torch.zeros(n_streams, n_pos, 1 << 16, dtype=torch.int64)
    for chunk in chunks():
        keys = _order_key(chunk.reshape(n_streams, -1)).cpu()
        high = keys >> 16
        for t in range(n_streams):
            for p in range(n_pos):
                selected = keys[t][high[t] == bucket[t, p]]
                if selected.numel():
                    low_hist[t, p] += torch.bincount(selected & 0xFFFF, minlength=1 << 16)
    low = torch.searchsorted(low_hist.cumsum(dim=2), (rank_in_bucket + 1).unsqueeze(-1)).squeeze(-1)
    return _key_to_float((bucket << 16) | low)
