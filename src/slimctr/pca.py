"""Principal components of one field's embedding table, shared by FDO, compression and analysis.

The rows of a table are the samples: with X = E - mean (n x d, centred over rows) and its singular
value decomposition X = U S V^T, the principal directions are the rows of V^T, the variance each
explains is s_i^2 (up to the common 1 / (n - 1), which no ratio sees), and a row's k codes are its
centred coordinates on the first k directions. FDO keeps the smallest k whose directions explain
strictly more than a share r of the variance (GDCN spec 4.1); compression stores the codes, the k
directions and the mean, and reconstructs codes V_k + mean.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import Tensor

from slimctr.errors import SlimctrError

_ZERO_VARIANCE = 1e-20  # centred energy below this share of the table's energy is rounding noise


@dataclasses.dataclass(frozen=True)
class FieldPCA:
    """The centred PCA of a table, in float64: ``mean`` (d,), ``components`` (m, d) with
    orthonormal rows, descending by ``variance`` (m,), m = min(n, d)."""

    mean: Tensor
    components: Tensor
    variance: Tensor

    @classmethod
    def fit(cls, table: Tensor | np.ndarray) -> FieldPCA:
        """The PCA of ``table`` (rows are samples); NaN or infinite values are an error."""
        matrix = torch.as_tensor(table).detach().to("cpu", torch.float64)
        if matrix.dim() != 2 or 0 in matrix.shape:
            raise ValueError(f"a PCA needs a non-empty 2-D table, got shape {tuple(matrix.shape)}")
        if not torch.isfinite(matrix).all():
            raise SlimctrError("the embedding table holds NaN or infinite values")
        mean = matrix.mean(dim=0)
        centred = matrix - mean
        variance = torch.linalg.svdvals(centred) ** 2  # exact; no n x m left factor kept
        _, vectors = torch.linalg.eigh(centred.T @ centred)  # ascending eigenvalues
        components = vectors.flip(-1).T[: len(variance)]
        if variance.sum() <= _ZERO_VARIANCE * (matrix**2).sum():
            variance = torch.zeros_like(variance)  # equal rows: no direction explains anything
        return cls(mean=mean, components=components, variance=variance)

    @property
    def max_width(self) -> int:
        """min(n, d): the most components a table of n rows and d columns has."""
        return len(self.variance)

    def width(self, variance_ratio: float) -> int:
        """The smallest k whose first k components explain strictly more than
        ``variance_ratio`` of the variance; 1 <= k <= min(n, d). Ratio 1 gives min(n, d); a
        table without variance (one row, or equal rows) gives 1.

        >>> FieldPCA.fit(torch.tensor([[0.0, 0.0], [2.0, 0.1], [4.0, -0.1]])).width(0.9)
        1
        """
        check_ratio(variance_ratio)
        total = self.variance.sum()
        if total == 0:
            return 1
        if variance_ratio == 1:  # a cumulative sum need not reach 1 exactly
            return self.max_width
        explained = torch.cumsum(self.variance, 0) / total
        return min(int((explained <= variance_ratio).sum()) + 1, self.max_width)

    def project(self, table: Tensor | np.ndarray, width: int) -> Tensor:
        """The codes of ``table``'s rows on the first ``width`` components: (n, width)."""
        if not 1 <= width <= self.max_width:
            raise SlimctrError(f"a width must be in [1, {self.max_width}], got {width}")
        matrix = torch.as_tensor(table).detach().to("cpu", torch.float64)
        return (matrix - self.mean) @ self.components[:width].T

    def reconstruct(self, codes: Tensor) -> Tensor:
        """The rows whose codes are ``codes`` (n, k): codes V_k + mean, in float64."""
        width = codes.shape[-1]
        return codes.to(torch.float64) @ self.components[:width] + self.mean


def pca_width(table: Tensor | np.ndarray, variance_ratio: float) -> int:
    """FDO's width of ``table`` at ``variance_ratio`` (``FieldPCA.width``), which is
    ``sklearn.decomposition.PCA(n_components=variance_ratio).n_components_``.

    >>> pca_width(torch.tensor([[0.0, 0.0], [2.0, 0.1], [4.0, -0.1]]), 0.9)
    1
    """
    check_ratio(variance_ratio)
    return FieldPCA.fit(table).width(variance_ratio)


def check_ratio(value: object) -> None:
    """Raise unless ``value`` is a variance ratio in (0, 1]."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise SlimctrError(f"variance_ratio must be in (0, 1], got {value!r}")
