"""The per-field PCA that FDO, compression and the analysis tools share."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from slimctr.pca import FieldPCA


@pytest.mark.parametrize(("rows", "width"), [(200, 16), (5, 16), (300, 6)])
def test_components_are_orthonormal_and_ordered_by_the_variance_they_explain(rows, width):
    rng = np.random.default_rng(rows)
    table = rng.normal(size=(rows, width)) * 0.8 ** np.arange(width) + 2.0
    pca = FieldPCA.fit(table)
    m = min(rows, width)
    assert pca.components.shape == (m, width) and pca.variance.shape == (m,)
    torch.testing.assert_close(pca.components @ pca.components.T, torch.eye(m, dtype=torch.float64))
    centred = torch.from_numpy(table - table.mean(axis=0))
    explained = ((centred @ pca.components.T) ** 2).sum(dim=0)  # variance along each direction
    torch.testing.assert_close(explained, pca.variance)
    assert torch.all(pca.variance[:-1] >= pca.variance[1:])


def test_every_component_reconstructs_the_table_and_fewer_lose_only_the_rest():
    rng = np.random.default_rng(0)
    table = rng.normal(size=(100, 8)) @ rng.normal(size=(8, 8)) + 5.0
    pca = FieldPCA.fit(table)
    whole = pca.reconstruct(pca.project(table, 8))
    torch.testing.assert_close(whole, torch.from_numpy(table), rtol=0, atol=1e-10)
    for k in (1, 3, 6):
        lost = ((pca.reconstruct(pca.project(table, k)) - torch.from_numpy(table)) ** 2).sum()
        torch.testing.assert_close(lost, pca.variance[k:].sum())


def test_a_table_without_variance_has_width_one_and_reconstructs_its_row():
    table = np.full((6, 4), 0.25)
    pca = FieldPCA.fit(table)
    assert pca.width(0.99) == 1 and float(pca.variance.sum()) == 0
    torch.testing.assert_close(pca.reconstruct(pca.project(table, 1)), torch.from_numpy(table))
