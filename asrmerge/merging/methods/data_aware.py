"""Data-aware merges: RegMean and Fisher merging, weighted by statistics of each domain's data.

The statistics come from each fine-tuned model run on N utterances of its own domain (asrmerge.training.statistics);
the engine hands a method the tasks' statistics of the tensor it merges, stacked (T, ...), or None where there are
none. Both methods are weighted means of the fine-tuned weights, θ = Σ_t W_t θ_t / Σ_t W_t (W_t a matrix or
per-entry weights); written for task vectors, τ = Σ_t W_t τ_t / Σ_t W_t, since the weights sum to the identity.
Their λ grid is (1.0,): θ₀ + 1·τ is the reference merge (a config may scan others).
"""

from __future__ import annotations

from typing import Any, Mapping

from asrmerge.lazy_import import lazy_import
from asrmerge.merging.spec import PARAMETER_LAMBDAS, ParamSpec, TensorStream, declare

torch = lazy_import("torch")  # executed on first use (asrmerge.lazy_import)


@declare(
    "regmean",
    family="data_aware",
    statistics="gram",
    matrix_only=True,
    params={"alpha": ParamSpec(0.9, "float", minimum=0, maximum=1,
                               doc="off-diagonal entries of each Gram matrix are multiplied by alpha (1: plain RegMean)")},
    default_lambdas=PARAMETER_LAMBDAS,
    reference="FusionBench 0.2.33 regmean.merging_with_regmean_weights (Jin et al., ICLR 2023)",
)
def regmean(
    task_vectors: torch.Tensor, base: torch.Tensor, *, statistics: torch.Tensor | None = None,
    generator: torch.Generator | None = None, alpha: float = 0.9,
) -> torch.Tensor:
    """RegMean (Jin et al., "Dataless knowledge fusion by merging weights of language models", ICLR 2023): the linear
    map closest to every task's map on its own inputs, W = (Σ_t G_t)⁻¹ Σ_t G_t W_t in (in, out) layout, where G_t is
    the Gram matrix XᵀX/n of the layer's inputs under task t's model with its off-diagonal entries scaled by `alpha`.

    Solved in float64 (FusionBench inverts the sum in the parameters' dtype). Weights without Gram statistics (no
    linear layer's, or outside the covered layers) get the mean of τ_t, as the reference averages them.
    """
    if statistics is None:
        return task_vectors.mean(dim=0)
    if statistics.shape != (task_vectors.shape[0], base.shape[1], base.shape[1]):
        raise ValueError(f"Gram statistics of shape {tuple(statistics.shape)} for a weight of shape {tuple(base.shape)}")
    total = torch.zeros(base.shape[1], base.shape[1], dtype=torch.float64, device=base.device)
    weighted = torch.zeros(base.shape[1], base.shape[0], dtype=torch.float64, device=base.device)
    for gram, tau in zip(statistics, task_vectors):
        shrunk = gram.to(torch.float64) * alpha
        shrunk.diagonal().copy_(gram.diagonal())
        total += shrunk
        weighted += shrunk @ tau.to(torch.float64).T
    try:
        return torch.linalg.solve(total, weighted).T.to(task_vectors.dtype)
    except torch.linalg.LinAlgError:
        dead = int((total.diagonal() <= 0).sum())
        if dead:
            raise ValueError(f"the summed Gram matrix is singular: {dead} input dimension(s) no utterance excites "
                             "(zero diagonal); compute the statistics on more utterances") from None
        raise ValueError(f"the summed Gram matrix is singular at alpha {alpha:g}; a smaller alpha (e.g. "
                         f"{alpha / 2:g}) shrinks its off-diagonal entries and makes it invertible") from None


def fisher_task_weights(stream: TensorStream, params: Mapping[str, Any]) -> dict[str, Any]:
    """Pre-pass of Fisher merging with normalize=True: each task's Fisher information is divided by its L2 norm over
    the whole model, c_t ∝ 1/(‖F_t‖ + minimal_weight), Σ c_t = 1 (FusionBench `get_models_fisher_norm`)."""
    if not params["normalize"]:
        return {}
    squares = torch.zeros(stream.num_tasks, dtype=torch.float64)
    for _, stack in stream.statistics():
        squares += stack.reshape(stream.num_tasks, -1).to(torch.float64).square().sum(dim=1).cpu()
    inverse = 1.0 / (squares.sqrt() + params["minimal_weight"])
    return {"task_weights": (inverse / inverse.sum()).to(torch.float32)}


@declare(
    "fisher",
    family="data_aware",
    statistics="fisher",
    params={
        "minimal_weight": ParamSpec(1e-6, "float", minimum=0, min_inclusive=False,
                                    doc="added to every Fisher entry (no 0/0 where no task's data moves a weight)"),
        "normalize": ParamSpec(True, "bool", doc="divide each task's Fisher information by its norm over the model"),
    },
    global_stats=fisher_task_weights,
    default_lambdas=PARAMETER_LAMBDAS,
    reference="FusionBench 0.2.33 fisher_merging.merging_with_fisher_weights (Matena & Raffel, NeurIPS 2022)",
)
def fisher(
    task_vectors: torch.Tensor, base: torch.Tensor, *, statistics: torch.Tensor | None = None,
    task_weights: torch.Tensor | None = None, generator: torch.Generator | None = None,
    minimal_weight: float = 1e-6, normalize: bool = True,
) -> torch.Tensor:
    """Fisher merging (Matena & Raffel, "Merging models with Fisher-weighted averaging", NeurIPS 2022): every entry is
    the mean of the tasks' entries weighted by their diagonal Fisher information, θ = Σ_t c_t F_t θ_t / Σ_t c_t F_t
    with F_t + minimal_weight, and c_t the model-wide normalisation of the pre-pass (`task_weights`; equal weights
    when absent or with normalize=False). Parameters without Fisher statistics (frozen ones) get the mean of τ_t.
    """
    if statistics is None:
        return task_vectors.mean(dim=0)
    if statistics.shape != task_vectors.shape:
        raise ValueError(f"Fisher statistics of shape {tuple(statistics.shape)} for task vectors {tuple(task_vectors.shape)}")
    weights = statistics.to(task_vectors.dtype) + minimal_weight
    if normalize and task_weights is not None:
        weights = weights * task_weights.to(weights).reshape(-1, *([1] * base.ndim))
    return (weights * task_vectors).sum(dim=0) / weights.sum(dim=0)


@declare(
    "adamerging",
    family="data_aware",
    statistics="coefficients",
    params={
        "granularity": ParamSpec("layer", "str", choices=("task", "layer"),
                                 doc="one coefficient per task, or per task and parameter tensor"),
        "steps": ParamSpec(100, "int", minimum=1, doc="Adam steps on the entropy (the reference: 500)"),
        "learning_rate": ParamSpec(1e-3, "float", minimum=0, min_inclusive=False, doc="Adam's learning rate"),
        "init": ParamSpec(0.3, "float", minimum=0, maximum=1, doc="the coefficients' starting value (prior)"),
        "batch_size": ParamSpec(8, "int", minimum=1, doc="unlabeled validation utterances per step"),
    },
    default_lambdas=PARAMETER_LAMBDAS,
    reference="AdaMerging (Yang et al., ICLR 2024), official code EnnengYang/AdaMerging",
)
def adamerging(
    task_vectors: torch.Tensor, base: torch.Tensor, *, statistics: torch.Tensor | None = None,
    generator: torch.Generator | None = None, granularity: str = "layer", steps: int = 100,
    learning_rate: float = 1e-3, init: float = 0.3, batch_size: int = 8,
) -> torch.Tensor:
    """AdaMerging (Yang et al., "AdaMerging: Adaptive model merging for multi-task learning", ICLR 2024):
    τ = Σ_t λ_t τ_t with coefficients learned by minimising the entropy of the merged model's transcripts of unlabeled
    validation audio (asrmerge.training.adamerging; `granularity`, `steps`, `learning_rate`, `init` and `batch_size`
    are that learning's, which the rule adamerging_coefficients runs before this merge). `statistics`: the (T,)
    coefficients of this tensor; a tensor without them gets the prior, init · Σ_t τ_t."""
    if statistics is None:
        return init * task_vectors.sum(dim=0)
    if statistics.shape != (task_vectors.shape[0],):
        raise ValueError(f"AdaMerging coefficients of shape {tuple(statistics.shape)} for {task_vectors.shape[0]} tasks")
    return torch.tensordot(statistics.to(task_vectors.dtype), task_vectors, dims=1)
