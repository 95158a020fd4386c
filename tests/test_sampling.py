import pytest
import torch

from recon_core.network.categories import category_index
from training.sampling import StepBatchSampler, category_item_weights


def _draw_categories(items, weights, steps=400, batch=32):
    sampler = StepBatchSampler(weights, batch, steps, seed=3)
    drawn = torch.tensor([items[i] for b in sampler for i in b])
    return torch.bincount(drawn, minlength=13).double() / len(drawn)


def test_balanced_sampling_draws_categories_equally():
    items = [0] * 600 + [4] * 60 + [10] * 6  # airplanes drown benches... unless balanced
    freq = _draw_categories(items, category_item_weights(items, balance=1.0))
    for c in (0, 4, 10):
        assert abs(freq[c] - 1 / 3) < 0.02, freq


def test_unbalanced_sampling_follows_the_data():
    items = [0] * 600 + [4] * 60 + [10] * 6
    freq = _draw_categories(items, category_item_weights(items, balance=0.0))
    assert abs(freq[0] - 600 / 666) < 0.02 and abs(freq[10] - 6 / 666) < 0.01


def test_explicit_proportions():
    items = [category_index("airplane")] * 50 + [category_index("chair")] * 50 + [category_index("table")] * 5
    weights = category_item_weights(items, proportions={"airplane": 0.2, "chair": 0.3, "table": 0.5})
    freq = _draw_categories(items, weights)
    assert abs(freq[category_index("airplane")] - 0.2) < 0.02
    assert abs(freq[category_index("chair")] - 0.3) < 0.02
    assert abs(freq[category_index("table")] - 0.5) < 0.02


def test_shards_reassemble_the_global_batch_and_resume_is_exact():
    w = category_item_weights([0, 1, 2, 3] * 10)
    full = list(StepBatchSampler(w, 8, 5, seed=1))
    r0 = list(StepBatchSampler(w, 8, 5, seed=1, rank=0, world_size=2))
    r1 = list(StepBatchSampler(w, 8, 5, seed=1, rank=1, world_size=2))
    assert [a + b for a, b in zip(r0, r1)] == full
    assert list(StepBatchSampler(w, 8, 5, seed=1, start=3)) == full[3:]


def test_unknown_categories_are_never_drawn():
    items = [0] * 10 + [-1] * 100
    w = category_item_weights(items)
    assert w[10:].sum() == 0
    drawn = [i for b in StepBatchSampler(w, 16, 20) for i in b]
    assert max(drawn) < 10


def test_a_category_is_found_by_its_name_or_its_synset_and_the_index_is_read_only():
    """The data's folders name categories by synset, the user by name: one index for both (training built it in four
    places)."""
    from recon_core.network.categories import CATEGORIES, SYNSET_INDEX

    for i, c in enumerate(CATEGORIES):
        assert category_index(c.name) == category_index(c.name.upper()) == category_index(c.synset) == i
        assert SYNSET_INDEX[c.synset] == i
    assert len(SYNSET_INDEX) == len(CATEGORIES) and SYNSET_INDEX.get("02747177") is None  # an extra pool's synset
    with pytest.raises(ValueError, match="Unknown category 'guitar'"):
        category_index("guitar")
    with pytest.raises(TypeError):
        SYNSET_INDEX["02747177"] = 0
