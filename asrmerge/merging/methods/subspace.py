"""Task-vector subspace merges: Iso-C, Iso-CTS, TSV-M, BoostedTSV-M, STAR, KnOTS.

They act on 2-D weight matrices; any other tensor (1-D biases/norms, 3-D convolutions) gets the mean of τ_t, as the
official repositories do (the engine also routes embeddings matched by its exclusion patterns to the mean).
Every SVD runs in `svd_dtype` (float32 default, float64 optional) and is cast back. Orthogonalisation goes through
the single `linalg.polar_factor` (SVD Procrustes or Newton–Schulz).
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

from asrmerge.lazy_import import lazy_import
from asrmerge.merging.linalg import ORTHOGONALISERS, polar_factor, thin_svd, top_singular_triplets
from asrmerge.merging.methods.task_space import DENSITY, ties
from asrmerge.merging.spec import ParamSpec, declare

torch = lazy_import("torch")  # executed on first use (asrmerge.lazy_import)

ORTHOGONALISER = ParamSpec("svd", "str", choices=ORTHOGONALISERS,
                           doc="polar factor by SVD (reference Procrustes) or Newton–Schulz (the seed paper's fix)")
NS_STEPS = ParamSpec(5, "int", minimum=1, doc="Newton–Schulz iterations")
MIN_RANK = ParamSpec(1, "int", minimum=0,
                     doc="components kept per task when floor(r/T) is smaller (0 = reference: a zero update when r < T)")


#: The per-task map an SVD method applies to its independent per-task steps; the executor chooses it (sequential
#: `map` by default, asrmerge.merging.runtime.map_side_by_side on CPU): the method itself starts no thread.
TaskMap = Callable[[Callable, Iterable], Iterator]


def mean_task_vector(task_vectors: torch.Tensor) -> torch.Tensor:
    """Mean of τ_t: the merge of tensors that subspace methods do not decompose."""
    return task_vectors.mean(dim=0)


def _is_matrix(task_vectors: torch.Tensor) -> bool:
    return task_vectors.ndim == 3


def _polar_factors(
    u_cat: torch.Tensor, vh_cat: torch.Tensor, orthogonaliser: str, ns_steps: int, svd_dtype: torch.dtype | None,
    map_tasks: TaskMap,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Polar factors of the concatenated bases U and Vᵀ (through `map_tasks`), in their dtype."""
    u_orth, vh_orth = map_tasks(
        lambda basis: polar_factor(basis, orthogonaliser, ns_steps, svd_dtype).to(basis.dtype), (u_cat, vh_cat))
    return u_orth, vh_orth


# ------------------------------------------------------------------------------------------------------------- Iso-C


@declare(
    "iso_c",
    family="subspace",
    matrix_only=True,
    uses_svd=True,
    reference="official iso-merging iso_c = FusionBench 0.2.33 isotropic_merging/iso_utils.py::iso_c",
)
def iso_c(
    task_vectors: torch.Tensor,
    base: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    svd_dtype: torch.dtype | None = None,
    map_tasks: TaskMap = map,
) -> torch.Tensor:
    """Iso-C (Marczak et al., "No Task Left Behind: Isotropic Model Merging", ICML 2025).

    Δ = Σ_t τ_t = U S Vᵀ (thin SVD); τ = mean(S)·U Vᵀ: a flat (isotropic) spectrum with Δ's singular directions.
    """
    if not _is_matrix(task_vectors):
        return mean_task_vector(task_vectors)
    u, s, vh = thin_svd(task_vectors.sum(dim=0), svd_dtype)
    return (u * s.mean()) @ vh


# ----------------------------------------------------------------------------------------------------------- Iso-CTS


def iso_cts_split(rank: int, num_tasks: int, common_space_fraction: float) -> tuple[int, int]:
    """(k_c, per-task dimensions) as the official iso_cts: k_c = int(r·f), then adjusted so that r − k_c is the
    multiple of T nearest to r − k_c (Python round); the task share is clipped to [0, r] (the reference can
    overshoot r for tiny r and small f)."""
    common = int(rank * common_space_fraction)
    task_total = round((rank - common) / num_tasks) * num_tasks
    task_total = min(max(task_total, 0), rank - rank % num_tasks)
    common = rank - task_total
    return common, task_total // num_tasks


@declare(
    "iso_cts",
    family="subspace",
    matrix_only=True,
    uses_svd=True,
    params={
        "common_space_fraction": ParamSpec(0.8, "float", minimum=0.0, maximum=1.0,
                                           doc="fraction of the rank given to the common subspace"),
        "orthogonaliser": ORTHOGONALISER,
        "ns_steps": NS_STEPS,
    },
    reference="official iso-merging iso_cts = FusionBench 0.2.33 isotropic_merging/iso_utils.py::iso_cts",
)
def iso_cts(
    task_vectors: torch.Tensor,
    base: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    common_space_fraction: float = 0.8,
    orthogonaliser: str = "svd",
    ns_steps: int = 5,
    svd_dtype: torch.dtype | None = None,
    map_tasks: TaskMap = map,
) -> torch.Tensor:
    """Iso-CTS: isotropic merging in common and task-specific subspaces (Marczak et al., ICML 2025).

    Common subspace: top k_c singular vectors of Σ_t τ_t (`iso_cts_split`). Per task: residual τ_t − U_c U_cᵀ τ_t, its
    top (r − k_c)/T singular triplets fill the task slots (both from linalg.top_singular_triplets); the common block
    follows. U and Vᵀ are orthogonalised (polar factor) and all singular values are set to their mean.
    """
    if not _is_matrix(task_vectors):
        return mean_task_vector(task_vectors)
    n_tasks, rows, cols = task_vectors.shape
    rank = min(rows, cols)
    common, per_task = iso_cts_split(rank, n_tasks, common_space_fraction)
    u_c, s_c, vh_c, _ = top_singular_triplets(task_vectors.sum(dim=0), common, svd_dtype)
    dtype, device = task_vectors.dtype, task_vectors.device
    u_cat = torch.zeros(rows, rank, dtype=dtype, device=device)
    s_cat = torch.zeros(rank, dtype=dtype, device=device)
    vh_cat = torch.zeros(rank, cols, dtype=dtype, device=device)

    def residual_triplets(tv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, None]:
        return top_singular_triplets(tv - u_c @ (u_c.mT @ tv), per_task, svd_dtype)

    for t, (u_t, s_t, vh_t, _) in enumerate(map_tasks(residual_triplets, task_vectors)):
        slot = slice(t * per_task, (t + 1) * per_task)
        u_cat[:, slot] = u_t
        s_cat[slot] = s_t
        vh_cat[slot] = vh_t
    start = n_tasks * per_task
    u_cat[:, start : start + common] = u_c
    s_cat[start : start + common] = s_c
    vh_cat[start : start + common] = vh_c
    u_orth, vh_orth = _polar_factors(u_cat, vh_cat, orthogonaliser, ns_steps, svd_dtype, map_tasks)
    return (u_orth * s_cat.mean()) @ vh_orth


# ------------------------------------------------------------------------------------------------------------- TSV-M

SpectrumEdit = Callable[["torch.Tensor", "torch.Tensor | None"], "torch.Tensor"]  # strings: torch loads on first use


def tsv_rank_per_task(rank: int, num_tasks: int, min_rank_per_task: int) -> int:
    """k = floor(r/T) (the reference's int(r·(1/T))), raised to min(min_rank_per_task, r) when smaller."""
    k = rank // num_tasks
    return min(min_rank_per_task, rank) if k < min_rank_per_task else k


def _tsv_merge(
    task_vectors: torch.Tensor,
    orthogonaliser: str,
    ns_steps: int,
    min_rank_per_task: int,
    svd_dtype: torch.dtype | None,
    map_tasks: TaskMap,
    edit_spectrum: SpectrumEdit | None = None,
    whole_spectrum: bool = False,
) -> torch.Tensor:
    """TSV-M's core; `edit_spectrum(kept, whole)` rewrites each task's k kept singular values (whole: the task's
    whole spectrum with `whole_spectrum`, else None: only the top k are computed)."""
    n_tasks, rows, cols = task_vectors.shape
    k = tsv_rank_per_task(min(rows, cols), n_tasks, min_rank_per_task)
    # Only the T·k filled slots are orthogonalised: the reference's buffers the size of one thin SVD hold zero vectors
    # beyond them, whose polar-factor columns meet a zero singular value, so leaving them out changes nothing.
    width = n_tasks * k
    if width == 0:  # min_rank_per_task 0 with r < T: the reference's zero update
        return torch.zeros_like(task_vectors[0])
    dtype, device = task_vectors.dtype, task_vectors.device
    u_cat = torch.zeros(rows, width, dtype=dtype, device=device)
    s_cat = torch.zeros(width, dtype=dtype, device=device)
    vh_cat = torch.zeros(width, cols, dtype=dtype, device=device)

    def triplets(tv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        return top_singular_triplets(tv, k, svd_dtype, whole_spectrum=whole_spectrum)

    for t, (u, s, vh, spectrum) in enumerate(map_tasks(triplets, task_vectors)):
        slot = slice(t * k, (t + 1) * k)
        u_cat[:, slot] = u
        s_cat[slot] = s if edit_spectrum is None else edit_spectrum(s, spectrum)
        vh_cat[slot] = vh
    u_orth, vh_orth = _polar_factors(u_cat, vh_cat, orthogonaliser, ns_steps, svd_dtype, map_tasks)
    return (u_orth * s_cat) @ vh_orth


@declare(
    "tsv_m",
    family="subspace",
    matrix_only=True,
    uses_svd=True,
    params={"orthogonaliser": ORTHOGONALISER, "ns_steps": NS_STEPS, "min_rank_per_task": MIN_RANK},
    reference="official TSV repo src/utils/TSVM_utils.py::compute_and_sum_svd_mem_reduction (= FusionBench 0.2.33)",
)
def tsv_m(
    task_vectors: torch.Tensor,
    base: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    orthogonaliser: str = "svd",
    ns_steps: int = 5,
    min_rank_per_task: int = 1,
    svd_dtype: torch.dtype | None = None,
    map_tasks: TaskMap = map,
) -> torch.Tensor:
    """TSV-Merge (Gargiulo et al., "Task Singular Vectors: Reducing Task Interference in Model Merging", CVPR 2025).

    Per task: the k = floor(r/T) largest singular triplets of τ_t (linalg.top_singular_triplets), written into slots
    t·k..(t+1)·k of the concatenated bases; orthogonalise the concatenated U and Vᵀ (polar factor: SVD Procrustes,
    or Newton–Schulz — the seed paper's "TSV-M w/ NS"); τ = U⊥ diag(S_cat) V⊥ᵀ. When r < T (k = 0) each task still contributes
    min_rank_per_task components (buffers widen to T·k); min_rank_per_task=0 reproduces the reference's zero update.
    """
    if not _is_matrix(task_vectors):
        return mean_task_vector(task_vectors)
    return _tsv_merge(task_vectors, orthogonaliser, ns_steps, min_rank_per_task, svd_dtype, map_tasks)


def boost_spectrum(
    kept: torch.Tensor, full: torch.Tensor | None, beta: float, energy: str, energy_scope: str
) -> torch.Tensor:
    """BoostedTSV-M spectrum edit: σ̃_i = max(σ_i, σ_{j*}), j* = min{j : e_j ≥ β}.

    e_j = Σ_{i≤j} w_i / Σ w over the retained k (energy_scope="retained") or the full spectrum ("full"), with
    w = σ² (energy="squared") or σ ("linear"). β ≥ 1 lifts nothing (plain TSV-M); if no j reaches β (possible with
    energy_scope="full") j* = k, which also lifts nothing; an all-zero spectrum is returned unchanged. `full` (the
    task's whole spectrum) is read only with energy_scope="full".
    """
    if beta >= 1 or kept.numel() == 0:
        return kept

    def weight(values: torch.Tensor) -> torch.Tensor:
        return values.square() if energy == "squared" else values

    weight_kept = weight(kept)
    total = weight_kept.sum() if energy_scope == "retained" else weight(full).sum()
    if float(total) <= 0:
        return kept
    ratios = torch.cumsum(weight_kept, dim=0) / total
    hits = torch.nonzero(ratios >= beta)
    j_star = int(hits[0, 0]) if hits.numel() else kept.numel() - 1
    return torch.maximum(kept, kept[j_star])


@declare(
    "boosted_tsv_m",
    family="subspace",
    matrix_only=True,
    uses_svd=True,
    params={
        "beta": ParamSpec(0.3, "float", minimum=0.0, maximum=1.0, min_inclusive=False,
                          doc="cumulative-energy threshold; singular values past it are lifted to it (1 = TSV-M)"),
        "energy": ParamSpec("squared", "str", choices=("squared", "linear"), doc="energy of σ² or of σ"),
        "energy_scope": ParamSpec("retained", "str", choices=("retained", "full"),
                                  doc="energy ratio over the retained k values or the task's full spectrum"),
        "orthogonaliser": ParamSpec("newton_schulz", "str", choices=ORTHOGONALISERS, doc=ORTHOGONALISER.doc),
        "ns_steps": NS_STEPS,
        "min_rank_per_task": MIN_RANK,
    },
    reference="the seed paper's BoostedTSV-M (reconstruction, docs/methods.md); TSV-M core as tsv_m",
)
def boosted_tsv_m(
    task_vectors: torch.Tensor,
    base: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    beta: float = 0.3,
    energy: str = "squared",
    energy_scope: str = "retained",
    orthogonaliser: str = "newton_schulz",
    ns_steps: int = 5,
    min_rank_per_task: int = 1,
    svd_dtype: torch.dtype | None = None,
    map_tasks: TaskMap = map,
) -> torch.Tensor:
    """BoostedTSV-M (Carvalho et al., Interspeech 2026): TSV-M whose per-task retained spectrum is flattened first.

    For each task, with retained σ_1 ≥ … ≥ σ_k, every σ_i beyond the cumulative-energy index j* is lifted to σ_{j*}
    (`boost_spectrum`); then concatenation and orthogonalisation as TSV-M (Newton–Schulz by default).
    """
    if not _is_matrix(task_vectors):
        return mean_task_vector(task_vectors)

    def edit(kept: torch.Tensor, full: torch.Tensor | None) -> torch.Tensor:
        return boost_spectrum(kept, full, beta, energy, energy_scope)

    return _tsv_merge(task_vectors, orthogonaliser, ns_steps, min_rank_per_task, svd_dtype, map_tasks, edit,
                      whole_spectrum=energy_scope == "full")


# -------------------------------------------------------------------------------------------------------------- STAR


def star_truncate(matrix: torch.Tensor, eta: float, svd_dtype: torch.dtype | None = None) -> torch.Tensor:
    """STAR on one matrix: keep the smallest rank whose singular values reach eta % of the nuclear norm
    (searchsorted on the cumulative sum, + 1), rescale the kept values to the full nuclear norm. Zero matrix → zero."""
    u, s, vh = thin_svd(matrix, svd_dtype)
    total = s.sum()
    if float(total) <= 0:
        return torch.zeros_like(matrix)
    keep = int(torch.searchsorted(torch.cumsum(s, dim=0), total * eta / 100)) + 1
    keep = min(keep, s.numel())
    kept = s[:keep]
    scaled = kept * (total / kept.sum())
    return (u[:, :keep] * scaled) @ vh[:keep]


@declare(
    "star",
    family="subspace",
    matrix_only=True,
    uses_svd=True,
    params={"eta": ParamSpec(40.0, "float", minimum=0.0, maximum=100.0, min_inclusive=False,
                             doc="percent of the nuclear norm kept by the truncation")},
    reference="official STAR (IBM/STAR merger/STAR.py::star), then the simple average",
)
def star(
    task_vectors: torch.Tensor,
    base: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    eta: float = 40.0,
    svd_dtype: torch.dtype | None = None,
    map_tasks: TaskMap = map,
) -> torch.Tensor:
    """STAR: Spectral Truncation And Rescale (Lee et al., NAACL 2025): truncate each τ_t (`star_truncate`), average."""
    if not _is_matrix(task_vectors):
        return mean_task_vector(task_vectors)
    return torch.stack(list(map_tasks(lambda tv: star_truncate(tv, eta, svd_dtype), task_vectors))).mean(dim=0)


# ------------------------------------------------------------------------------------------------------------- KnOTS

#: Singular values at or below this are dropped from KnOTS's shared basis (official code: s > 1e-5).
KNOTS_MIN_SINGULAR_VALUE = 1e-5


@declare(
    "knots",
    family="subspace",
    matrix_only=True,
    uses_svd=True,
    params={"density": DENSITY},  # the official configs' topK 20 %
    reference="official KnOTS task_merger.SVDMerger (merge_method ties, merging_type mean), trimming per tensor",
)
def knots(
    task_vectors: torch.Tensor,
    base: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    density: float = 0.2,
    svd_dtype: torch.dtype | None = None,
    map_tasks: TaskMap = map,
) -> torch.Tensor:
    """KnOTS (Stoica et al., "Model merging with SVD to tie the KnOTS", ICLR 2025), made for LoRA updates: the tasks'
    updates ΔW_t (out, in) are aligned in one basis by the SVD of their concatenation [ΔW_1 … ΔW_T] = U S [V_1 … V_T]
    (components with σ ≤ 1e-5 dropped), each task becomes its block S V_t, TIES merges the blocks (trim to `density`
    per task, elect the sign of the sum, mean of the agreeing entries) and τ = U · merged. The SVD runs in float64,
    as in the official code, whatever `svd_dtype`. The official code trims over the blocks of all layers at once; here
    each tensor is trimmed on its own (the two agree on a model of one layer)."""
    if not _is_matrix(task_vectors):
        return mean_task_vector(task_vectors)
    n_tasks, rows, cols = task_vectors.shape
    concatenated = task_vectors.permute(1, 0, 2).reshape(rows, n_tasks * cols)
    u, s, vh = torch.linalg.svd(concatenated.to(torch.float64), full_matrices=False)
    kept = s > KNOTS_MIN_SINGULAR_VALUE
    u, s, vh = u[:, kept], s[kept], vh[kept]
    blocks = (s[:, None] * vh).reshape(len(s), n_tasks, cols).permute(1, 0, 2).to(task_vectors.dtype)
    merged = ties(blocks, blocks[0], density=density, scope="global", aggregation="mean")
    return (u.to(task_vectors.dtype) @ merged).to(task_vectors.dtype)
