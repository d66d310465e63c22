"""The identity a resumed search is checked against: the weights' digest and the data's sizes and sample."""

from __future__ import annotations

import torch
from torch import nn

from autoprune.study.identity import data_identity, model_digest, state_digest


def test_the_digest_changes_with_any_value_name_shape_or_dtype() -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    digest = model_digest(model)
    assert digest == state_digest(dict(model.state_dict())) and len(digest) == 64
    assert model_digest(None) is None
    with torch.no_grad():
        model.bias[0] += 1e-6  # one value, one ulp-sized change
    assert model_digest(model) != digest
    state = {"w": torch.zeros(2, 3)}
    variants = [{"v": torch.zeros(2, 3)}, {"w": torch.zeros(3, 2)}, {"w": torch.zeros(2, 3, dtype=torch.float64)}]
    assert len({state_digest(state), *(state_digest(v) for v in variants)}) == 4


def test_the_data_identity_names_the_sizes_and_the_first_validation_batch() -> None:
    batch = (torch.arange(6.0).reshape(2, 3), torch.tensor([0, 1]))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*batch), batch_size=2)
    identity = data_identity(loader, [batch])
    assert identity["train_size"] == 2 and identity["val_size"] == 1
    changed = (batch[0] + 1, batch[1])
    assert data_identity(loader, [changed])["val_sample_sha256"] != identity["val_sample_sha256"]
    assert data_identity(iter([batch]), iter([batch]))["train_size"] is None  # a plain iterator has no size
