"""Unlearning: the reverse loss, TRU's gate, guarded stop, reset, routing, branch scaling,
repair budget and isolation, determinism, the judge's forget metric, and every method on a
plugin backbone and on a RecBole model."""
import contextlib
import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import ks_2samp

from conftest import tiny_config, write_tiny_dataset
from recbole_tru.data.forget import select_forget
from recbole_tru.data.retained import UnlearnData, with_overrides
from recbole_tru.losses import bpr_loss, gated_forget_loss, reverse_bpr_loss
from recbole_tru.registry import get_unlearn_trainer
from recbole_tru.training import build_model, fit, load_data
from recbole_tru.unlearn import pipeline
from recbole_tru.unlearn.base import UntilStop
from recbole_tru.unlearn.capacity import describe, reset_rows
from recbole_tru.unlearn.evaluation import Judge
from recbole_tru.unlearn.gate import (GuardedStop, auc_distance, auc_noise, cold_items, gate_weights,
                                     ks_distance, matched_targets, matched_targets_per_user, retained_support,
                                     score_profiles)

UID, IID, NEG = "user_id", "item_id", "neg_item_id"


# --------------------------------------------------------------------------- fixtures and helpers

class Trained:
    """Splits and an original model trained once (2 epochs) per backbone."""

    def __init__(self, config, train_original=True):
        self.config = config
        _, train, valid, test = load_data(config)
        self.train, self.valid, self.test = train.dataset, valid.dataset, test.dataset
        if train_original:
            self.original, _, _ = fit(config, train, valid)
        else:
            self.original = build_model(config, train.dataset)

    def setup(self, method="tru", **overrides):
        """(config, data, model, trainer) as ``pipeline.unlearn_method`` builds them."""
        config = with_overrides(self.config, **overrides)
        forget = select_forget(config, self.train)
        data = UnlearnData(config, self.train, self.valid, self.test, forget)
        model = pipeline.start_from(config, data, self.original)
        return config, data, model, get_unlearn_trainer(method)(config, model, data)


@pytest.fixture(scope="module")
def trained(tiny_root, workdir):
    cache = {}

    def get(model):
        if model not in cache:
            cache[model] = Trained(tiny_config(tiny_root, model, workdir))
        return cache[model]

    return get


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def start_targeted(trainer):
    """What ``TRUTrainer.unlearn`` does before the targeted epochs."""
    if trainer.option("reset"):
        trainer.reset_owned_capacity()
    trainer._start_targeted()


# --------------------------------------------------------------------------- 1. losses

def test_reverse_bpr_loss_value_and_direction():
    p_vals, n_vals = [2.0, -1.0, 0.3], [0.0, 0.5, 1.2]
    pos = torch.tensor(p_vals, requires_grad=True)
    neg = torch.tensor(n_vals, requires_grad=True)
    expected = np.mean([-math.log(1 / (1 + math.exp(-(n - p)))) for p, n in zip(p_vals, n_vals)])
    loss = reverse_bpr_loss(pos, neg)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # BPR with positive and negative swapped, and not BPR itself
    assert loss.item() == pytest.approx(bpr_loss(neg, pos).item(), rel=1e-6)
    assert abs(loss.item() - bpr_loss(pos, neg).item()) > 0.1
    loss.backward()
    # d/ds_ui = σ(s_ui - s_uj) / B > 0: a descent step lowers s_ui and raises s_uj
    sig = torch.sigmoid(pos.detach() - neg.detach()) / 3
    assert torch.allclose(pos.grad, sig) and torch.allclose(neg.grad, -sig)
    with torch.no_grad():
        new_pos, new_neg = pos - 0.1 * pos.grad, neg - 0.1 * neg.grad
    assert (new_pos < pos).all() and (new_neg > neg).all()
    assert reverse_bpr_loss(new_pos, new_neg).item() < loss.item()


def test_reverse_bpr_loss_weights():
    pos = torch.tensor([2.0, -1.0, 0.5], requires_grad=True)
    neg = torch.tensor([0.0, 0.5, 1.0], requires_grad=True)
    per_pair = -F.logsigmoid(neg - pos).detach()
    weight = torch.tensor([1.0, 0.0, 0.5])
    loss = reverse_bpr_loss(pos, neg, weight=weight)
    # the mean is over all B pairs: a gate of 0 removes the pair without re-weighting the others
    assert loss.item() == pytest.approx(float(per_pair[0] + 0.5 * per_pair[2]) / 3, rel=1e-6)
    loss.backward()
    assert pos.grad[1] == 0 and neg.grad[1] == 0
    assert pos.grad[0] > 0 and pos.grad[2] > 0
    unweighted = reverse_bpr_loss(pos.detach(), neg.detach(), weight=torch.ones(3))
    assert float(unweighted) == pytest.approx(float(per_pair.mean()), rel=1e-6)


def test_one_reverse_step_on_vbpr_lowers_the_forgotten_pair(trained):
    base = trained("VBPR")
    model = build_model(base.config, base.train)
    model.load_state_dict(base.original.state_dict())
    batch = next(iter(base.setup(forget_regime="interaction", forget_share=0.1)[1].forget_loader()))
    users, items, negs = batch[UID][:1], batch[IID][:1], batch[NEG][:1]
    before_pos, before_neg = (s.detach() for s in model.pair_scores(users, items, negs))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    optimizer.zero_grad()
    reverse_bpr_loss(*model.pair_scores(users, items, negs)).backward()
    optimizer.step()
    after_pos, after_neg = (s.detach() for s in model.pair_scores(users, items, negs))
    assert after_pos < before_pos
    assert after_neg > before_neg
    assert after_pos - after_neg < before_pos - before_neg


# --------------------------------------------------------------------------- 2. gate

def test_matched_targets_are_the_reference_order_statistics():
    np.testing.assert_allclose(matched_targets([5, 1, 3], [10, 20, 30]), [30, 10, 20])
    np.testing.assert_allclose(matched_targets([2, 7, 4, 9], [40, 1, 8, 3]), [1, 8, 3, 40])
    # ties keep their positions' order
    np.testing.assert_allclose(matched_targets([4, 4, 1], [7, 5, 9]), [7, 9, 5])
    with pytest.raises(ValueError, match="empty"):
        matched_targets([1, 2], [])


def test_matched_targets_interpolate_in_log_rank_for_unequal_sizes():
    # two forget ranks against four reference ranks: quantiles .25/.75 fall at positions 0.5 and 2.5
    targets = matched_targets([3, 1], [1, 4, 16, 64])
    np.testing.assert_allclose(targets, [math.exp((math.log(16) + math.log(64)) / 2), 2.0])


def test_drawn_quantile_offsets_replace_the_midpoints():
    """``offsets``: the j-th of n pairs (by rank) takes quantile (j + o)/n, o its own offset;
    0.5 everywhere is the midpoint rule. One forget pair against a user's reference [1, 4, 16]
    with offset 0.9 takes position 0.9 * 3 - 0.5 = 2.2 -> clipped to the last, 16; with 0.1,
    position -0.2 -> the first, 1; with 0.5, the median, 4."""
    np.testing.assert_allclose(matched_targets([5, 1, 3], [10, 20, 30], offsets=[0.5, 0.5, 0.5]),
                               matched_targets([5, 1, 3], [10, 20, 30]))
    # ranks [2, 7] against [1, 4, 16, 64]: pair 0 (first by rank) o = 0.25 -> q = .125, position 0
    # -> 1; pair 1 o = 0.75 -> q = .875, position 3 -> 64
    np.testing.assert_allclose(matched_targets([2, 7], [1, 4, 16, 64], offsets=[0.25, 0.75]), [1, 64])
    for offset, expected in ((0.9, 16.0), (0.1, 1.0), (0.5, 4.0)):
        targets = matched_targets_per_user([1], [3], [1, 1, 1], [1, 4, 16], offsets=[offset])
        np.testing.assert_allclose(targets, [expected])
    # per user: a user's offsets follow its own pairs in rank order
    targets = matched_targets_per_user([1, 2, 1], [5, 8, 2], [1, 2, 1, 1], [100, 3, 10, 1000],
                                       offsets=[0.5, 0.5, 0.5])
    np.testing.assert_allclose(targets, matched_targets_per_user([1, 2, 1], [5, 8, 2], [1, 2, 1, 1],
                                                                 [100, 3, 10, 1000]))


def test_drawn_offsets_are_seeded_per_request(trained):
    """``tru_match_quantiles: drawn``: one offset in [0, 1) per forget pair, the same for the same
    forget_seed; ``mid``: none."""
    _, _, _, a = trained("VBPR").setup(forget_share=0.2, tru_match_quantiles="drawn")
    _, _, _, b = trained("VBPR").setup(forget_share=0.2, tru_match_quantiles="drawn")
    assert a.match_offsets.shape == (len(a.data.forget.rows),)
    assert ((a.match_offsets >= 0) & (a.match_offsets < 1)).all()
    np.testing.assert_array_equal(a.match_offsets, b.match_offsets)
    assert trained("VBPR").setup(forget_share=0.2)[3].match_offsets is None


def test_per_user_targets_match_each_user_to_its_own_reference():
    # user 1 has 3 reference pairs: its forget pairs get its own order statistics
    # user 2 has 1 (< 3): its pair keeps the pooled target
    forget_users, forget_ranks = [1, 2, 1], [5, 8, 2]
    ref_users, ref_ranks = [1, 2, 1, 1], [100, 3, 10, 1000]
    targets = matched_targets_per_user(forget_users, forget_ranks, ref_users, ref_ranks)
    pooled = matched_targets(forget_ranks, ref_ranks)
    own = matched_targets([5, 2], [100, 10, 1000])
    np.testing.assert_allclose(targets, [own[0], pooled[1], own[1]])
    # the vectorised form equals the per-user definition on random data (ties included)
    rng = np.random.default_rng(3)
    fu, fr = rng.integers(0, 12, 300), rng.integers(1, 40, 300)
    ru, rr = rng.integers(0, 12, 200), rng.integers(1, 40, 200)
    expected = matched_targets(fr, rr)
    for user in np.unique(fu):
        if (ru == user).sum() >= 3:
            expected[fu == user] = matched_targets(fr[fu == user], rr[ru == user])
    np.testing.assert_allclose(matched_targets_per_user(fu, fr, ru, rr), expected, rtol=1e-12)


def test_users_with_few_forget_pairs_are_matched_pooled():
    """``min_forget``: a user with fewer forget pairs takes the pooled target; the others their own."""
    fu, fr = np.array([1, 2, 2, 2]), np.array([5.0, 1.0, 2.0, 3.0])
    ru, rr = np.array([1, 1, 1, 2, 2, 2]), np.array([10.0, 20.0, 30.0, 100.0, 200.0, 300.0])
    own = matched_targets_per_user(fu, fr, ru, rr)
    assert own[0] == pytest.approx(20.0)                        # one pair: the middle of its user's reference
    targets = matched_targets_per_user(fu, fr, ru, rr, min_forget=2)
    assert targets[0] == pytest.approx(matched_targets(fr, rr)[0])
    np.testing.assert_allclose(targets[1:], [100.0, 200.0, 300.0])
    np.testing.assert_allclose(own[1:], targets[1:])


def test_gate_weights_zero_at_or_below_target_and_growing_above():
    ranks = np.array([10, 20, 40, 9, 5, 2, 1])
    weights = gate_weights(ranks, np.full(len(ranks), 10.0), 0.5)
    assert (weights[:3] == 0).all()                       # at (rank == target) and below: exactly 0
    assert (weights[3:] > 0).all()
    assert (np.diff(weights[3:]) > 0).all()               # higher above the target, larger push
    assert weights[4] == pytest.approx(15 / 17)           # tanh(log(10/5) / 0.5) = tanh(log 4)
    assert weights[-1] <= 1.0
    # the gap is measured in log-rank: the same ratio gives the same weight anywhere in the list
    assert gate_weights([50], [100], 1.0)[0] == pytest.approx(gate_weights([1], [2], 1.0)[0])
    # a larger temperature flattens the gate
    assert gate_weights([5], [10], 2.0)[0] < gate_weights([5], [10], 0.5)[0]
    with pytest.raises(ValueError, match="temperature"):
        gate_weights([1], [2], 0.0)


def test_two_sided_gate_is_negative_below_the_target_and_equal_above():
    ranks = np.array([10, 20, 40, 5, 1])
    one, two = gate_weights(ranks, np.full(5, 10.0), 0.5), gate_weights(ranks, np.full(5, 10.0), 0.5, two_sided=True)
    np.testing.assert_array_equal(two[3:], one[3:])                   # above the target: the same push
    assert two[0] == 0.0                                              # at the target: nothing
    assert two[1] == pytest.approx(-15 / 17)                          # tanh(log(10/20) / 0.5) = -tanh(log 4)
    assert -1.0 <= two[2] < two[1] < 0                                # farther below, a larger pull


def test_gated_forget_loss_pushes_down_above_and_pulls_up_below():
    pos, neg = torch.tensor([2.0, 2.0, 2.0], requires_grad=True), torch.tensor([0.5, 0.5, 0.5])
    gate = torch.tensor([0.7, 0.0, -0.4])
    gated_forget_loss(pos, neg, gate).backward()
    assert pos.grad[0] > 0                                            # descent lowers a pushed pair's score
    assert pos.grad[1] == 0                                           # a pair at its target is left alone
    assert pos.grad[2] < 0                                            # descent raises a pulled pair's score
    # by hand: d/ds mean(w·-log σ(s - n)) = -w·σ(n - s) / B for the pulled pair
    assert pos.grad[2].item() == pytest.approx(-0.4 * torch.sigmoid(torch.tensor(-1.5)).item() / 3)
    # with no negative gate it is the reverse BPR loss, bit for bit
    one_sided = torch.tensor([0.7, 0.0, 0.2])
    assert torch.equal(gated_forget_loss(pos, neg, one_sided), reverse_bpr_loss(pos, neg, weight=one_sided))


def test_auc_distance_is_the_folded_mann_whitney_auc():
    from scipy.stats import mannwhitneyu
    rng = np.random.default_rng(4)
    for n, m in ((40, 70), (200, 33)):
        f = rng.integers(1, 50, size=n).astype(float)                 # ranks with ties
        r = rng.integers(1, 50, size=m).astype(float) + rng.integers(0, 10)
        u = mannwhitneyu(r, f).statistic                              # pairs where the reference ranks lower (larger)
        assert auc_distance(f, r) == pytest.approx(abs(u / (n * m) - 0.5), abs=1e-12)
    assert auc_distance([1, 2], [3, 4, 5]) == 0.5                     # every forget pair ranked above: a certain member
    assert auc_distance([7, 7], [7, 7, 7]) == 0.0                     # all tied: chance
    assert np.isnan(auc_distance([], [1.0]))


def test_auc_noise_is_the_null_standard_error_of_the_auc():
    """Hand value, and the spread of the AUC of two samples of one distribution."""
    assert auc_noise(1, 2) == pytest.approx(np.sqrt(4 / 24))
    assert auc_noise(10, 5000) == pytest.approx(np.sqrt(5011 / 600000))
    assert np.isnan(auc_noise(0, 10))
    rng = np.random.default_rng(0)
    for n, m in ((10, 400), (60, 60)):
        # AUC of n forget vs m reference values drawn from one distribution (no ties)
        samples = [(rng.random(n), rng.random(m)) for _ in range(3000)]
        signed = [np.mean(f[:, None] < r[None, :]) for f, r in samples]
        assert np.std(signed) == pytest.approx(auc_noise(n, m), rel=0.06)
        # the folded distance the stop reads has mean sqrt(2 / pi) of it under the null
        folded = np.array([auc_distance(f, r) for f, r in samples])
        assert folded.mean() == pytest.approx(np.sqrt(2 / np.pi) * auc_noise(n, m), rel=0.08)


# two forget pairs of a partially deleted user (1) and three of a deleted item (users 2), their references
TWO_GROUPS = (np.array([1, 1, 2, 2, 2]), np.array([3.0, 40.0, 5.0, 6.0, 500.0]),
              {"partial": np.array([True, True, False, False, False]), "item": np.array([False, False, True, True, True])},
              {"partial": (np.array([1, 1]), np.array([10, 11])), "item": (np.array([2, 2]), np.array([12, 13]))},
              {"partial": np.array([30.0, 50.0]), "item": np.array([100.0, 1000.0])})


def test_each_group_of_pairs_stops_on_its_own_distance():
    """Partially deleted users' pairs on the Recall gap, deleted items' pairs on the rank AUC:
    the check's distance is their pair-weighted mean."""
    from recbole_tru.unlearn.gate import gate_check

    users, ranks, masks, groups, refs = TWO_GROUPS
    record = gate_check(users, ranks, masks, groups, refs, np.ones(5), match="pooled", gate=False, temperature=0.5,
                        stop_metric={"partial": "recall", "item": "auc"}, stop_k=20)
    recall = abs(1 / 2 - 0 / 2)                                      # user 1: forget 1 of 2 in the top 20, reference 0
    auc = abs((2 + 2 + 1) / 6 - 0.5)                                  # item pairs above the reference: 2, 2 and 1 of 2
    assert record["recall_gap_partial"] == pytest.approx(recall) and record["auc_item"] == pytest.approx(auc)
    assert record["distance"] == pytest.approx((2 * recall + 3 * auc) / 5)
    assert record["signed_partial"] == pytest.approx(0.5) and record["signed_item"] == pytest.approx(auc)   # both above
    one = gate_check(users, ranks, masks, groups, refs, np.ones(5), match="pooled", gate=False, temperature=0.5,
                     stop_metric="recall", stop_k=20)
    assert one["distance"] == pytest.approx((2 * recall + 3 * one["recall_gap_item"]) / 5)


def test_the_check_reports_the_auc_groups_noise_floor():
    """``noise``: pair-weighted like the distance, the AUC's null standard error for a group that
    stops on the AUC and 0 for a group on the Recall gap."""
    from recbole_tru.unlearn.gate import gate_check

    users, ranks, masks, groups, refs = TWO_GROUPS
    record = gate_check(users, ranks, masks, groups, refs, np.ones(5), match="pooled", gate=False, temperature=0.5,
                        stop_metric={"partial": "recall", "item": "auc"}, stop_k=20)
    assert record["auc_noise_item"] == pytest.approx(np.sqrt(6 / 72))
    assert record["noise"] == pytest.approx(3 * np.sqrt(6 / 72) / 5)
    recall_only = gate_check(users, ranks, masks, groups, refs, np.ones(5), match="pooled", gate=False,
                             temperature=0.5, stop_metric="recall", stop_k=20)
    assert recall_only["noise"] == 0.0


def test_score_profiles_are_the_items_unit_score_columns():
    scores = np.array([[3.0, 0.0, 1.0], [4.0, 0.0, -1.0]])           # 2 users x 3 items
    profiles = score_profiles(scores)
    np.testing.assert_allclose(profiles, [[0.6, 0.8], [0.0, 0.0], [2 ** -0.5, -(2 ** -0.5)]])


def test_retained_support_is_the_mean_cosine_with_the_users_kept_items():
    """support(u, i) = mean over u's retained items k of <p_i, p_k>, from unit profiles."""
    profiles = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.8, -0.6]])    # items 0..4
    retain_users, retain_items = np.array([1, 1, 2, 3]), np.array([1, 2, 3, 1])
    support = retained_support(profiles, np.array([1, 2, 1]), np.array([3, 4, 4]), retain_users, retain_items)
    np.testing.assert_allclose(support, [(0.6 + 0.8) / 2, 0.6 * 0.8 - 0.8 * 0.6, (0.8 - 0.6) / 2], atol=1e-12)


def test_matching_by_support_gives_the_best_quantiles_to_the_most_supported_pairs():
    """``order`` replaces the partially deleted users' current ranks as the matching key only: the
    gate weights and the stop's distance still read the ranks."""
    from recbole_tru.unlearn.gate import gate_check

    users, ranks, masks, groups, refs = TWO_GROUPS
    plain = np.ones(5)
    by_rank = gate_check(users, ranks, masks, groups, refs, plain, match="pooled", gate=True, temperature=0.5,
                         stop_metric="recall", stop_k=20)
    order = np.array([2.0, 1.0, np.nan, np.nan, np.nan])       # the pair ranked 40 is the better supported
    weights = np.ones(5)
    by_support = gate_check(users, ranks, masks, groups, refs, weights, match="pooled", gate=True, temperature=0.5,
                            stop_metric="recall", stop_k=20, order=order)
    # reference ranks 30 and 50: by rank, pair 0 (rank 3) takes 30 and pair 1 (rank 40) takes 50
    np.testing.assert_allclose(plain[:2], gate_weights([3.0, 40.0], [30.0, 50.0], 0.5))
    # by support, pair 1 takes 30 (it sits below it: weight 0) and pair 0 takes 50
    np.testing.assert_allclose(weights[:2], gate_weights([3.0, 40.0], [50.0, 30.0], 0.5))
    assert weights[1] == 0 and plain[1] > 0
    np.testing.assert_allclose(weights[2:], plain[2:])          # the deleted items' group keeps its ranks
    assert by_support["distance"] == by_rank["distance"]


def test_guarded_stop_stops_below_the_noise_floor():
    """A distance above delta but below the check's noise floor stops (the forget pairs cannot be
    told from the reference at this sample size); without a floor it does not."""
    stop = GuardedStop(0.01, 2)
    assert not stop.update(0.08, lambda: "a") and not stop.update(0.07, lambda: "b")
    floored = GuardedStop(0.01, 2)
    assert floored.update(0.08, lambda: "a", noise=0.09)
    assert "noise floor 0.0900" in floored.reason and floored.best_state == "a"
    assert not GuardedStop(0.01, 2).update(0.08, lambda: "a", noise=0.05)    # above the floor: go on


def test_ks_distance_matches_scipy():
    rng = np.random.default_rng(3)
    for n, m in ((50, 80), (200, 37), (10, 10)):
        a = rng.integers(1, 60, size=n).astype(float)          # rank-like, with ties
        b = rng.integers(1, 60, size=m).astype(float) + rng.integers(0, 8)
        assert ks_distance(a, b) == pytest.approx(ks_2samp(a, b).statistic, abs=1e-12)
        c, d = rng.normal(size=n), rng.normal(0.5, 2.0, size=m)
        assert ks_distance(c, d) == pytest.approx(ks_2samp(c, d).statistic, abs=1e-12)
    same = rng.integers(1, 20, size=30)
    assert ks_distance(same, same) == 0.0
    assert ks_distance(same, rng.permutation(same)) == 0.0
    assert ks_distance([1, 2, 3], [4, 5]) == 1.0
    assert ks_distance([10, 20], [1, 2, 3]) == 1.0


# --------------------------------------------------------------------------- 3. guarded stop

def run_stop(distances, delta=0.05, patience=2):
    stop = GuardedStop(delta, patience)
    calls = []
    for step, d in enumerate(distances):
        def snapshot(step=step):
            calls.append(step)
            return step
        if stop.update(d, snapshot):
            return stop, step, calls
    return stop, None, calls


def test_guarded_stop_at_second_rise_keeps_the_minimum():
    stop, at, calls = run_stop([0.9, 0.5, 0.3, 0.4, 0.6, 0.2])
    assert at == 4                         # second rise in a row
    assert stop.best_state == 2 and stop.best == 0.3 and stop.best_check == 2
    assert calls == [0, 1, 2]              # snapshots only of new bests
    assert "rose 2" in stop.reason


def test_guarded_stop_a_fall_resets_the_rise_count():
    stop, at, calls = run_stop([0.9, 0.5, 0.6, 0.4, 0.45, 0.42, 0.5, 0.7])
    assert at == 7
    assert stop.best_state == 3
    stop, at, _ = run_stop([0.9, 0.5, 0.6, 0.6, 0.7])   # a plateau is not a rise
    assert at is None
    stop, at, calls = run_stop([0.9, 0.3, 0.3, 0.4, 0.5])   # equal minima: the first is kept
    assert at == 4 and stop.best_state == 1 and calls == [0, 1]


def test_guarded_stop_below_delta():
    stop, at, _ = run_stop([0.5, 0.3, 0.04, 0.01])
    assert at == 2 and stop.best_state == 2
    assert "< delta" in stop.reason
    stop, at, _ = run_stop([0.5, 0.3, 0.05])               # strictly below
    assert at is None
    stop, at, _ = run_stop([0.5, 0.6, 0.7], patience=3)
    assert at is None and stop.best_state == 0


# --------------------------------------------------------------------------- 4. reset in the user regime

@pytest.mark.parametrize("name", ["VBPR", "MMGCN"])
def test_tru_resets_deleted_users_to_the_seeded_initial_rows(trained, name):
    base = trained(name)
    config, data, model, trainer = base.setup(forget_regime="user", forget_share=0.1)
    deleted = torch.as_tensor(data.forget.deleted_users)
    assert len(deleted) == 4
    trainer.unlearn()
    fresh = dict(build_model(config, data.retain_dataset).named_parameters())
    params = dict(model.named_parameters())
    original = dict(base.original.named_parameters())
    for table, offset in model.user_tables():
        rows = deleted + offset
        assert torch.equal(params[table][rows], fresh[table][rows]), table
        assert not torch.equal(original[table][rows], fresh[table][rows]), table   # they were trained


@pytest.mark.parametrize("name", ["VBPR", "MMGCN"])
def test_reset_redraws_owned_rows_only(trained, name):
    """Item regime, ``tru_reset_items: init``: the deleted items' ID rows (and the rows of any user
    left with nothing) are re-drawn from the seeded initialisation; content branches and
    everything else stay."""
    config, data, model, trainer = trained(name).setup(forget_regime="item", forget_share=0.1, tru_reset_items="init")
    f = data.forget
    assert len(f.deleted_items) == round(0.1 * len(np.unique(data.train_dataset.inter_feat[IID].numpy())))
    start = state(model)
    fresh = state(build_model(config, data.retain_dataset))
    trainer.reset_owned_capacity()
    after = state(model)
    cap = describe(model)
    for key, value in after.items():
        expected = start[key].clone()
        for tables, ids in ((cap.user_tables, f.deleted_users), (cap.item_id_tables, f.deleted_items)):
            for table, offset in tables:
                if table == key:
                    expected[offset + ids] = fresh[key][offset + ids]
        assert torch.equal(value, expected), key
    for table, offset in cap.item_id_tables:
        rows = offset + f.deleted_items
        assert not torch.equal(start[table][rows], fresh[table][rows]), table   # they were trained


@pytest.mark.parametrize("name", ["VBPR", "MMGCN"])
def test_cold_reset_adds_the_cold_items_drift(trained, name):
    """``tru_reset_items: cold``: a deleted item's ID rows become its initial rows plus the mean
    drift (trained - initial) of the reference cold items; every other item row stays."""
    config, data, model, trainer = trained(name).setup(forget_regime="item", forget_share=0.1,
                                                       tru_reset_items="cold", tru_cold_items=3)
    f = data.forget
    start = state(model)
    fresh = state(build_model(config, data.retain_dataset))
    donors = cold_items(data, 3)
    assert len(donors) == 3 and not np.isin(donors, f.deleted_items).any()
    trainer.reset_owned_capacity()
    after = state(model)
    cap = describe(model)
    for table, offset in cap.item_id_tables:
        drift = (start[table][offset + donors] - fresh[table][offset + donors]).mean(0)
        expected = fresh[table][offset + f.deleted_items] + drift
        assert torch.allclose(after[table][offset + f.deleted_items], expected, atol=1e-6), table
        assert drift.abs().max() > 0, table                     # the donors were trained: a real shift
        others = np.setdiff1d(np.arange(data.n_items), f.deleted_items) + offset
        assert torch.equal(after[table][others], start[table][others]), table


def test_reset_rows_with_donors_by_hand():
    """θ_i = θ⁰_i + mean_d (θ_d - θ⁰_d), on a 4-row table with offset 1; no donors: plain reset."""
    class M(torch.nn.Module):
        def __init__(self, w):
            super().__init__()
            self.t = torch.nn.Parameter(torch.tensor(w))
    model = M([[9.0, 9.0], [1.0, 2.0], [3.0, 5.0], [7.0, 7.0]])
    fresh = M([[0.0, 0.0], [0.5, 0.5], [1.0, 1.0], [2.0, 0.0]])
    reset_rows(model, fresh, [("t", 1)], np.array([2]), np.array([0, 1]))
    # donors are rows 1 and 2: drifts (0.5, 1.5) and (2, 4), mean (1.25, 2.75); row 3 = (2, 0) + that
    assert model.t.tolist() == [[9.0, 9.0], [1.0, 2.0], [3.0, 5.0], [3.25, 2.75]]
    reset_rows(model, fresh, [("t", 1)], np.array([0]), np.array([], dtype=np.int64))
    assert model.t.tolist()[1] == [0.5, 0.5]


# --------------------------------------------------------------------------- 5. routing

def _forget_grads(trained, name, **overrides):
    base = trained(name)
    config, data, model, trainer = base.setup(forget_regime="interaction", forget_share=0.1, tru_retain_weight=0.0,
                                              tru_gate=False, tru_stop="epochs", **overrides)
    start_targeted(trainer)
    batch = next(iter(trainer.train_loader()))
    model.zero_grad(set_to_none=True)
    trainer.targeted_loss(batch).backward()
    return model, trainer


def _grad_rows(param, offset, n):
    return None if param.grad is None else param.grad[offset:offset + n]


@pytest.mark.parametrize("name", ["VBPR", "MMGCN"])
@pytest.mark.parametrize("isolate", [True, False])
def test_routed_forget_gradient_reaches_only_affected_user_rows(trained, name, isolate):
    model, trainer = _forget_grads(trained, name, tru_route=True, tru_isolate=isolate, tru_update_dense=True,
                                   tru_route_items=False)
    cap = describe(model)
    params = dict(model.named_parameters())
    n_users, n_items = trainer.data.n_users, trainer.data.n_items
    if not isolate:     # every parameter is trainable: only the routing keeps the forget gradient off them
        assert all(p.requires_grad for p in params.values())
    for table, offset in cap.item_id_tables:
        g = _grad_rows(params[table], offset, n_items)
        assert g is None or not g.any(), table
    for dense in cap.dense(model):
        assert params[dense].grad is None or not params[dense].grad.any(), dense
    f = trainer.data.forget
    affected = np.setdiff1d(f.users, f.deleted_users)      # users keeping some training rows
    np.testing.assert_array_equal(trainer.units, affected)
    moved = 0
    for table, offset in cap.user_tables:
        g = _grad_rows(params[table], offset, n_users)
        outside = np.setdiff1d(np.arange(n_users), affected)
        assert not g[outside].any(), table
        moved += int(g[affected].abs().sum(1).gt(0).sum())
    assert moved > 0


@pytest.mark.parametrize("name", ["VBPR", "MMGCN"])
def test_routed_items_forget_gradient_reaches_the_forgotten_items_id_rows_only(trained, name):
    """``tru_route_items`` (the default): the forget gradient also reaches the ID rows of the
    items the partially deleted users forget, and no other item row, dense layer or content branch."""
    model, trainer = _forget_grads(trained, name, tru_route=True, tru_route_items=True)
    params = dict(model.named_parameters())
    cap = describe(model)
    f, n_items = trainer.data.forget, trainer.data.n_items
    forgotten = np.unique(f.items[trainer.partial_pair])
    others = np.setdiff1d(np.arange(n_items), forgotten)
    moved = 0
    for table, offset in cap.item_id_tables:
        g = _grad_rows(params[table], offset, n_items)
        assert g is not None, table
        assert not g[others].any(), f"{table}: a row outside the forgotten items moved"
        moved += int(g[forgotten].reshape(len(forgotten), -1).abs().sum(1).gt(0).sum())
    assert moved > 0
    for dense in cap.dense(model):
        assert params[dense].grad is None or not params[dense].grad.any(), dense


def test_item_bias_not_routed_keeps_the_forgotten_items_bias_still(trained):
    """``tru_route_item_bias: False``: the push reaches the forgotten items' embedding rows but
    not their one-column bias rows (which would move each item for every user alike), except
    for items deleted whole (their own rows: the deleted items' route)."""
    model, trainer = _forget_grads(trained, "VBPR", tru_route=True, tru_route_items=True, tru_route_item_bias=False)
    f = trainer.data.forget
    partial_items = np.setdiff1d(np.unique(f.items[trainer.partial_pair]), f.deleted_items)
    bias, emb = model.item_bias.weight.grad, model.item_embedding.weight.grad
    assert bias is None or not bias[partial_items].any()
    assert emb[partial_items].abs().sum(1).gt(0).sum() > 0
    assert "item_bias.weight" not in trainer.routed_rows or not trainer.routed_rows["item_bias.weight"][partial_items].any()
    model, trainer = _forget_grads(trained, "VBPR", tru_route=True, tru_route_items=True)   # the default routes it
    assert model.item_bias.weight.grad[partial_items].abs().sum() > 0


def test_projected_push_has_no_component_along_the_partner_directions(trained):
    """``tru_push_project`` = r: the bases are the top r right singular vectors of the vectors
    each VBPR table is scored against (orthonormal, [width, r]); the partially deleted users'
    push on γ_u, θ_u and their forgotten items' γ_i has no component along them, and it is the
    unprojected push minus that component."""
    r = 2
    model, trainer = _forget_grads(trained, "VBPR", tru_route=True, tru_route_items=True, tru_push_project=r)
    bases = trainer.push_bases
    assert set(bases) == {"user_embedding.weight", "item_embedding.weight", *(f"theta.{m}.weight" for m in model.modalities)}
    items = torch.arange(1, trainer.data.n_items)
    with torch.no_grad():
        expect = torch.linalg.svd(model.item_embedding(items).double(), full_matrices=False)[2][:r].T
    # the same subspace as the items' γ_i's top r directions (signs may differ)
    assert torch.allclose((bases["user_embedding.weight"].double() @ bases["user_embedding.weight"].double().T),
                          expect @ expect.T, atol=1e-5)
    f = trainer.data.forget
    partial_items = np.setdiff1d(np.unique(f.items[trainer.partial_pair]), f.deleted_items)
    for name, V in bases.items():
        assert torch.allclose(V.T @ V, torch.eye(r), atol=1e-5), name
        grad = dict(model.named_parameters())[name].grad
        rows = partial_items if name == "item_embedding.weight" else np.unique(f.users[trainer.partial_pair])
        assert grad[rows].abs().sum() > 0, name
        assert (grad[rows] @ V).abs().max() < 1e-6 * max(1.0, float(grad[rows].abs().max())), name
    plain, _ = _forget_grads(trained, "VBPR", tru_route=True, tru_route_items=True, tru_push_project=0)
    g0, V = plain.user_embedding.weight.grad, bases["user_embedding.weight"]
    assert torch.allclose(model.user_embedding.weight.grad, g0 - (g0 @ V) @ V.T, atol=1e-7)


@pytest.mark.parametrize("name", ["VBPR", "MMGCN"])
def test_support_order_is_measured_once_from_the_users_kept_items(trained, name):
    """``tru_match_order: support``: one key per partially deleted user's pair, the negated
    :func:`retained_support` of the score columns of the model as the targeted update starts
    (every user of the tiny data: fewer than SUPPORT_USERS), NaN for the other pairs; ``rank``:
    none."""
    from recbole_tru.model.ranking import user_scores

    config, data, model, trainer = trained(name).setup(forget_share=0.2, tru_match_order="support")
    start_targeted(trainer)
    key, f = trainer.match_order, data.forget
    assert np.isnan(key[~trainer.partial_pair]).all() and np.isfinite(key[trainer.partial_pair]).all()
    scores = user_scores(model, np.arange(1, data.n_users)).numpy()[:, 1:]
    columns = scores.T / np.linalg.norm(scores.T, axis=1, keepdims=True)
    profiles = np.vstack([np.zeros((1, data.n_users - 1)), columns])
    pairs = np.flatnonzero(trainer.partial_pair)
    for p in pairs[:5]:
        kept = data.retain_items[data.retain_users == f.users[p]]
        assert -key[p] == pytest.approx(float(np.mean(profiles[kept] @ profiles[f.items[p]])), abs=1e-6)
    _, _, _, plain = trained(name).setup(forget_share=0.2)
    start_targeted(plain)
    assert plain.match_order is None


def test_linear_user_side_gives_vbprs_scores(trained):
    """``linear_user_side``: ``Z x_u + b`` is VBPR's full-sort score, with ``x_u`` the user tables'
    rows concatenated in the layout's order; MMGCN (propagated tables) has none."""
    from recbole_tru.model.ranking import user_scores

    model = trained("VBPR").original
    items = torch.arange(1, model.n_items)
    with torch.no_grad():
        z, b, layout = model.linear_user_side(items)
        users = torch.arange(1, 6)
        params = dict(model.named_parameters())
        x = torch.cat([params[name][users] for name, _ in layout], dim=1)
        assert [w for _, w in layout] == [params[name].shape[1] for name, _ in layout]
        assert torch.allclose(x @ z.T + b, user_scores(model, users.numpy())[:, 1:], atol=1e-5)
    assert trained("MMGCN").original.linear_user_side(items) is None


def test_min_change_meets_each_rows_pairs_with_the_least_score_change():
    """``_min_change``: per row, ``Z_r Δ_r = e_r`` (up to the ridge) and no other solution of the
    same constraints has a smaller ``Δᵀ G Δ``; rows of 1 and 3 pairs padded together give each
    row's own solution."""
    from recbole_tru.unlearn.tru import SOLVE_RIDGE, _min_change

    gen = torch.Generator().manual_seed(0)
    width = 6
    a = torch.randn(40, width, generator=gen, dtype=torch.float64)
    g = a.T @ a / 40
    g_inv = torch.linalg.inv(g)
    z = torch.randn(4, width, generator=gen, dtype=torch.float64)
    e = torch.randn(4, generator=gen, dtype=torch.float64)
    row = torch.tensor([0, 1, 1, 1])
    delta = _min_change(z, e, row, 2, g_inv)
    for r, pairs in ((0, [0]), (1, [1, 2, 3])):
        zr, er = z[pairs], e[pairs]
        assert torch.allclose(zr @ delta[r], er, rtol=10 * SOLVE_RIDGE, atol=10 * SOLVE_RIDGE)
        alone = _min_change(zr, er, torch.zeros(len(pairs), dtype=torch.long), 1, g_inv)[0]
        assert torch.allclose(alone, delta[r], atol=1e-10)
        # any other solution: delta + n with Z n = 0 (n from the null space of Z_r)
        null = torch.linalg.svd(zr, full_matrices=True)[2][len(pairs):].T
        for _ in range(5):
            other = delta[r] + null @ torch.randn(null.shape[1], generator=gen, dtype=torch.float64)
            assert other @ g @ other >= delta[r] @ g @ delta[r] - 1e-9


def test_within_user_order_counts_the_users_better_targets():
    from recbole_tru.unlearn.tru import _within_user_order

    rows = np.array([0, 0, 0, 1, 1, 2])
    targets = np.array([30.0, 4.0, 12.0, 7.0, 7.0, 1.0])
    assert _within_user_order(rows, targets).tolist() == [2, 0, 1, 0, 1, 0]


def test_solve_gives_each_pair_the_score_at_its_target_and_moves_only_their_users_rows(trained):
    """``tru_solve: rows``, one pass with given targets, one pair per user: each pair's new score
    is the score the user's list (the pair left out) had at its target rank, by hand (midway
    between the items ranked t - 1 and t; up to the ridge); only those users' rows move, no item
    table. Three passes with every pair's target: the pairs end nearer their targets (in
    log-rank) than they started."""
    from recbole_tru.model.ranking import pair_ranks, user_scores
    from recbole_tru.unlearn.tru import SOLVE_RIDGE, score_metric_inverse

    config, data, model, trainer = trained("VBPR").setup(forget_share=0.2, tru_solve="rows", tru_epochs=0)
    f, history = data.forget, data.train_history()
    before = state(model)
    pairs = np.flatnonzero(trainer.partial_pair)
    pairs = pairs[np.unique(f.users[pairs], return_index=True)[1]]          # one pair per user
    targets = np.full(len(f.rows), np.nan)
    targets[pairs] = np.random.default_rng(0).integers(1, 30, size=len(pairs)).astype(float)
    users, items = f.users[pairs], f.items[pairs]
    expected = []
    for u, i, t in zip(users, items, targets[pairs]):
        row = user_scores(model, [u], history)[0].double().numpy()
        row[i] = -np.inf
        ranked = np.sort(row[np.isfinite(row)])[::-1]
        expected.append((ranked[int(t) - 2] + ranked[int(t) - 1]) / 2 if t > 1 else ranked[0])
    with torch.no_grad():
        z, b, layout = model.linear_user_side(torch.arange(1, data.n_items))
        z = z.double()
        g_inv = score_metric_inverse(z)
        trainer._solve_pass(targets, trainer.affected_users, z, g_inv, layout)
    after = user_scores(model, users, history).double().numpy()[np.arange(len(users)), items]
    np.testing.assert_allclose(after, expected, rtol=5 * SOLVE_RIDGE, atol=5 * SOLVE_RIDGE)
    for name, value in model.state_dict().items():
        changed = (value != before[name]).reshape(len(value), -1).any(1) if value.dim() else value != before[name]
        if name in dict(layout):
            assert set(torch.nonzero(changed).flatten().tolist()) <= set(users.tolist()), name
        else:
            assert not changed.any(), name
    # every partial pair, three passes: nearer their targets than before
    config, data, model, trainer = trained("VBPR").setup(forget_share=0.2, tru_solve="rows", tru_epochs=0)
    f, history = data.forget, data.train_history()
    pairs = np.flatnonzero(trainer.partial_pair)
    targets = np.full(len(f.rows), np.nan)
    targets[pairs] = np.random.default_rng(1).integers(1, 30, size=len(pairs)).astype(float)
    distance = lambda: np.mean(np.abs(np.log(pair_ranks(model, f.users[pairs], f.items[pairs], history))
                                      - np.log(targets[pairs])))
    start = distance()
    with torch.no_grad():
        for _ in range(3):
            trainer._solve_pass(targets, trainer.affected_users, z, g_inv, layout)
    assert distance() < 0.5 * start


def test_solve_without_a_targeted_update_still_matches_in_support_order(trained):
    """``tru_solve: rows`` with ``tru_epochs: 0`` (no targeted update, whose start measures the
    support key otherwise): the solve measures ``tru_match_order: support``'s key itself; the
    partially deleted users' pairs are the solve's, not the targeted update's."""
    config, data, model, trainer = trained("VBPR").setup(forget_share=0.2, tru_solve="rows", tru_epochs=0,
                                                         tru_match_order="support")
    assert trainer.solving and not trainer.partial_pair[trainer.stepped].any()
    trainer.unlearn()
    assert trainer.match_order is not None and np.isfinite(trainer.match_order[trainer.partial_pair]).all()
    assert "solve" in trainer.phase_seconds and "solved" in trainer.stop_reason
    assert [c["phase"] for c in trainer.checks if "phase" in c][-1] == "solved"


def test_solve_passes_are_the_checks_it_reads_targets_from(trained):
    """``tru_solve_passes``: one target check per pass, then the final one; the passes more change
    the users' rows (ID and content side) and nothing else."""
    phases, states = {}, {}
    for passes in (1, 3):
        config, data, model, trainer = trained("VBPR").setup(forget_share=0.2, tru_solve="rows", tru_epochs=0,
                                                             tru_solve_passes=passes)
        trainer.unlearn()
        phases[passes] = [c["phase"] for c in trainer.checks if c.get("phase", "").startswith("solve")]
        states[passes] = state(model)
    assert phases == {1: ["solve", "solved"], 3: ["solve", "solve", "solve", "solved"]}
    moved = [k for k in states[1] if not torch.equal(states[1][k], states[3][k])]
    assert moved and all(k == "user_embedding.weight" or k.startswith("theta.") for k in moved), moved   # user rows only


def test_solve_changes_nothing_without_a_linear_user_side(trained):
    """MMGCN has no ``linear_user_side``: ``tru_solve: rows`` gives the option-off edit, and no
    solve time."""
    states = []
    for value in ("none", "rows"):
        config, data, model, trainer = trained("MMGCN").setup(forget_share=0.2, tru_solve=value, tru_epochs=1)
        trainer.unlearn()
        assert "solve" not in trainer.phase_seconds
        states.append(state(model))
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_projected_push_changes_nothing_without_partner_vectors(trained):
    """A backbone without fixed partner vectors (MMGCN; RecBole's BPR has no such method), and a
    request with no partially deleted user (the item regime): no bases, the same edit as with
    the option off."""
    for name in ("MMGCN", "BPR"):
        _, trainer = _forget_grads(trained, name, tru_push_project=4)
        assert trainer.push_bases == {}, name
    base = trained("VBPR")
    states = []
    for r in (0, 4):
        config, data, model, trainer = base.setup(forget_regime="item", forget_share=0.1, tru_push_project=r,
                                                  tru_epochs=1)
        trainer.unlearn()
        assert trainer.push_bases == {}
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


@pytest.mark.parametrize("name", ["VBPR", "MMGCN"])
def test_unrouted_forget_gradient_reaches_item_rows(trained, name):
    model, trainer = _forget_grads(trained, name, tru_route=False, tru_isolate=False)
    params = dict(model.named_parameters())
    table, offset = describe(model).item_id_tables[0]
    g = _grad_rows(params[table], offset, trainer.data.n_items)
    assert g is not None and g[np.unique(trainer.data.forget.items)].any()


# --------------------------------------------------------------------------- 6. branch scaling

def _masked_cos(model, trainer, forget_batch, retain_batch, branch):
    """cos(∇_b L_f, ∇_b L_r) on the affected users' rows, computed from the model alone."""
    f = trainer.data.forget
    affected = torch.as_tensor(np.setdiff1d(f.users, f.deleted_users))
    names = [n for n in model.branches()[branch] if n in dict(model.user_tables())]
    params = [dict(model.named_parameters())[n] for n in names]
    pos, neg = model.pair_scores(forget_batch[UID], forget_batch[IID], forget_batch[NEG])
    loss_f = trainer.lambda_f * (-F.logsigmoid(neg - pos)).mean()
    loss_r = trainer.lambda_r * model.calculate_loss(retain_batch)
    gf = torch.autograd.grad(loss_f, params)
    gr = torch.autograd.grad(loss_r, params)
    gf = torch.cat([g[affected].flatten() for g in gf])
    gr = torch.cat([g[affected].flatten() for g in gr])
    return float(gf @ gr / (gf.norm() * gr.norm()))


@pytest.mark.parametrize("name", ["VBPR", "MMGCN"])
def test_branch_cosine_and_alpha_after_one_refresh(trained, name):
    base = trained(name)
    # the cosine by hand over the affected users' rows: the push not routed to item rows, nor
    # projected (tru_push_project), here
    config, data, model, trainer = base.setup(forget_regime="interaction", forget_share=0.1, tru_gate=False,
                                              tru_stop="epochs", tru_scaling=True, tru_scale_refresh=1,
                                              tru_route_items=False, tru_push_project=0)
    start_targeted(trainer)
    forget_batch = next(iter(trainer.train_loader()))
    retain_batch = next(trainer._retain)
    trainer._retain = itertools.repeat(retain_batch)
    expected = {b: _masked_cos(model, trainer, forget_batch, retain_batch, b) for b in ("id", "text", "meta")}
    trainer.targeted_loss(forget_batch)
    record = [c for c in trainer.checks if "cos_id" in c][-1]
    lr, alpha_min = config["tru_learning_rate"], config["tru_alpha_min"]
    for b, cos in expected.items():
        assert record[f"cos_{b}"] == pytest.approx(cos, abs=1e-5), b
        alpha = trainer.alphas[b]
        assert alpha == record[f"alpha_{b}"] == pytest.approx(min(1.0, max(alpha_min, 1 + cos)), abs=1e-5)
        assert (alpha < 1) == (record[f"cos_{b}"] < 0), b
        group = next(g for g in trainer.optimizer.param_groups if g["branch"] == b)
        assert group["lr"] == pytest.approx(lr * alpha)


@pytest.mark.parametrize("name", ["VBPR", "MMGCN"])
def test_alpha_below_one_exactly_for_negative_cosines(trained, name):
    config, data, model, trainer = trained(name).setup(forget_regime="interaction", forget_share=0.1,
                                                       tru_stop="epochs", tru_epochs=6, tru_scale_refresh=1, tru_gate=False,
                                                       tru_repair_epochs=0, tru_alpha_min=0.1)
    trainer.unlearn()
    records = [c for c in trainer.checks if "cos_id" in c]
    assert len(records) == trainer.step >= 6                  # one refresh per step
    signs = set()
    for record in records:
        for b in ("id", "text", "meta"):
            cos, alpha = record[f"cos_{b}"], record[f"alpha_{b}"]
            assert alpha == pytest.approx(min(1.0, max(0.1, 1 + cos)))
            assert (alpha < 1) == (cos < 0)
            signs.add(cos < 0)
    assert signs == {True, False}, "the tiny run should show both signs (otherwise this test proves less)"
    assert trainer.alphas == {b: records[-1][f"alpha_{b}"] for b in ("id", "text", "meta")}


def test_no_scaling_keeps_alpha_one(trained):
    config, data, model, trainer = trained("MMGCN").setup(forget_regime="interaction", forget_share=0.1,
                                                          tru_stop="epochs", tru_epochs=3, tru_scaling=False,
                                                          tru_repair_epochs=0)
    trainer.unlearn()
    assert not [c for c in trainer.checks if "cos_id" in c]
    assert set(trainer.alphas.values()) == {1.0}


# --------------------------------------------------------------------------- 7. repair budget

def _pair_request(trained_like, path, n, seed):
    train = trained_like.train
    users = train.inter_feat[UID].numpy()
    items = train.inter_feat[IID].numpy()
    rows = np.random.default_rng(seed).choice(len(users), size=n, replace=False)
    id2u, id2i = train.field2id_token[UID], train.field2id_token[IID]
    lines = ["user_id:token\titem_id:token"] + [f"{id2u[users[r]]}\t{id2i[items[r]]}" for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def big(tmp_path_factory, workdir):
    """A data set four times the size of the tiny one (an untrained model is enough here)."""
    root = tmp_path_factory.mktemp("big")
    write_tiny_dataset(root, name="tiny-big", n_users=160, seed=5)
    return Trained(tiny_config(root, "VBPR", workdir, dataset="tiny-big"), train_original=False)


@pytest.mark.parametrize("budget", [1.5, 3, 0.25, 20])
def test_repair_budget_is_proportional_to_the_request_not_the_data(trained, big, tmp_path, budget):
    small = trained("VBPR")
    assert len(big.train.inter_feat) > 3 * len(small.train.inter_feat)
    n_forget = 10
    counts, neighbourhoods = [], []
    for base, tag in ((small, "small"), (big, "big")):
        path = _pair_request(base, tmp_path / f"{tag}.inter", n_forget, seed=1)
        _, data, _, trainer = base.setup(forget_regime="request", forget_file=str(path), tru_repair_budget=budget)
        assert len(data.forget) == n_forget
        rows = trainer.repair_rows()
        f = data.forget
        neighbourhood = np.flatnonzero(np.isin(data.retain_users, f.users) | np.isin(data.retain_items, f.items))
        assert len(rows) == round(budget * n_forget)
        assert np.isin(rows, neighbourhood).all()
        if len(rows) <= len(neighbourhood):                    # no replacement while the neighbourhood suffices
            assert len(np.unique(rows)) == len(rows)
        assert not np.isin(data.retain_items[rows], f.deleted_items).any()
        loader = trainer._repair_loader()
        assert sum(len(b) for b in loader) == len(rows)
        counts.append(len(rows))
        neighbourhoods.append(len(neighbourhood))
    assert counts[0] == counts[1]
    assert neighbourhoods[1] > 2 * neighbourhoods[0]        # the data (and the neighbourhood) grew, the budget did not


# --------------------------------------------------------------------------- 8. isolation

def _mixed_request(base, path):
    """One user row, one item row and twelve pairs of other users and items."""
    train = base.train
    users, items = train.inter_feat[UID].numpy(), train.inter_feat[IID].numpy()
    id2u, id2i = train.field2id_token[UID], train.field2id_token[IID]
    user = int(users[0])
    counts = np.bincount(items)
    item = int(next(i for i in np.argsort(counts, kind="stable") if counts[i] >= 2 and i not in items[users == user]))
    other = np.flatnonzero((users != user) & (items != item))
    rows = other[np.linspace(0, len(other) - 1, 12).astype(int)]
    lines = ["user_id:token\titem_id:token", f"{id2u[user]}\t", f"\t{id2i[item]}"]
    lines += [f"{id2u[users[r]]}\t{id2i[items[r]]}" for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path, user, item


@pytest.mark.parametrize("stop", ["epochs", "guarded"])
@pytest.mark.parametrize("name", ["VBPR", "MMGCN"])
def test_targeted_update_moves_only_the_isolation_mask(trained, tmp_path, name, stop):
    base = trained(name)
    path, user, item = _mixed_request(base, tmp_path / "request.inter")
    config, data, model, trainer = base.setup(forget_regime="request", forget_file=str(path),
                                              tru_repair_epochs=0, tru_epochs=3, tru_stop=stop)
    f = data.forget
    assert user in f.deleted_users and item in f.deleted_items
    start = state(model)
    fresh = state(build_model(config, data.retain_dataset))
    trainer.unlearn()
    after = state(model)
    cap = describe(model)
    partial_users = np.setdiff1d(f.users, f.deleted_users)
    # what the spec lets the targeted update move: rows of partially deleted users, the ID rows
    # that deleted items own and (tru_route_items) the ID rows of the items those users forget;
    # never a dense layer, another item's rows or a deleted user's
    allowed = {name_: torch.zeros(value.shape[0], dtype=torch.bool) for name_, value in after.items()}
    for table, offset in cap.user_tables:
        allowed[table][offset + partial_users] = True
    routed_items = np.unique(np.concatenate([f.deleted_items, f.items[trainer.partial_pair]]))   # tru_route_items
    assert config["tru_route_items"]
    for table, offset in cap.item_id_tables:
        allowed[table][offset + routed_items] = True
    assert set(trainer.routed_rows) >= {n for n, _ in cap.user_tables}
    for name_, mask in trainer.routed_rows.items():
        routed = mask.reshape(-1).bool()
        assert not (routed & ~allowed[name_]).any(), f"{name_}: the isolation mask exceeds the owned/affected rows"
    moved_rows = 0
    for name_, value in after.items():
        expected = start[name_].clone()                      # outside the mask: the start, or fresh if reset
        for table, offset in cap.user_tables:
            if table == name_:
                expected[offset + f.deleted_users] = fresh[name_][offset + f.deleted_users]
        for table, offset in cap.item_id_tables:
            if table == name_:
                expected[offset + f.deleted_items] = fresh[name_][offset + f.deleted_items]
                assert not torch.equal(start[name_][offset + f.deleted_items], fresh[name_][offset + f.deleted_items])
        free = trainer.routed_rows[name_].reshape(-1).bool() if name_ in trainer.routed_rows \
            else torch.zeros(value.shape[0], dtype=torch.bool)
        assert torch.equal(value[~free], expected[~free]), name_
        users_free = free.clone()
        for table, offset in cap.item_id_tables:
            if table == name_:
                users_free[offset:offset + data.n_items] = False
        changed = (value != start[name_]).reshape(value.shape[0], -1).any(1)
        moved_rows += int((changed & users_free).sum())
    if stop == "epochs":        # (the guarded stop may legitimately restore the state before any step)
        assert moved_rows > 0


def test_budget_moves_only_the_selected_share_of_affected_users(trained):
    config, data, model, trainer = trained("VBPR").setup(forget_regime="interaction", forget_share=0.1,
                                                         tru_budget=0.5, tru_stop="epochs", tru_epochs=3,
                                                         tru_repair_epochs=0)
    start = state(model)
    trainer.unlearn()
    affected = np.setdiff1d(data.forget.users, data.forget.deleted_users)
    assert len(trainer.units) == math.ceil(0.5 * len(affected))
    assert np.isin(trainer.units, affected).all()
    after = state(model)
    frozen = np.setdiff1d(np.arange(data.n_users), trainer.units)
    for table, _ in model.user_tables():
        assert torch.equal(after[table][frozen], start[table][frozen]), table
        assert not torch.equal(after[table][trainer.units], start[table][trainer.units]), table


# --------------------------------------------------------------------------- 10. determinism

@pytest.mark.parametrize("name", ["VBPR", "MMGCN"])
def test_tru_is_deterministic(trained, name):
    base = trained(name)
    results = []
    for _ in range(2):
        # every step taken (tru_stop: epochs): on tiny data the guarded stop may return the
        # unedited model (tested on its own), which would make this test vacuous
        _, _, model, trainer = base.setup(forget_regime="interaction", forget_share=0.1, tru_stop="epochs")
        np.random.rand(7), torch.rand(3)                      # global RNG state must not matter
        trainer.unlearn()
        results.append((state(model), [dict(c) for c in trainer.checks]))
    (a, checks_a), (b, checks_b) = results
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert checks_a == checks_b
    assert any(not torch.equal(a[k], base.original.state_dict()[k]) for k in a)


# --------------------------------------------------------------------------- 11. the judge sees memorisation

@pytest.mark.parametrize("name", ["VBPR", "MMGCN"])
def test_original_remembers_the_forget_set_more_than_retrain(tiny_root, workdir, name):
    config = tiny_config(tiny_root, name, workdir, epochs=20, stopping_step=20, learning_rate=0.01,
                         forget_regime="interaction", forget_share=0.1)
    _, train, valid, test = load_data(config)
    original, _, _ = fit(config, train, valid)
    forget = select_forget(config, train.dataset)
    data = UnlearnData(config, train.dataset, valid.dataset, test.dataset, forget)
    retrainer = get_unlearn_trainer("retrain")(config, pipeline.start_from(config, data, original), data)
    retrained = retrainer.unlearn()
    judge = Judge(config, data, retrained)
    mine = judge.metrics(original)["forget"]
    ref = judge.reference["forget"]
    assert mine["recall@20"] > ref["recall@20"] + 0.05
    assert mine["ndcg@20"] > ref["ndcg@20"] + 0.05
    report = judge.report(original)
    assert report["gap_to_retrain"]["forget"]["recall@20"] == pytest.approx(mine["recall@20"] - ref["recall@20"])
    assert judge.overlap(retrained) == 1.0
    assert 0 <= report["topk_overlap_with_retrain"] < 1.0


# --------------------------------------------------------------------------- 13. every method, two model paths

METHODS = ("retrain", "finetune", "gradascent", "reverse", "tru")
ONE_EPOCH = {"epochs": 1, "finetune_epochs": 1, "gradascent_epochs": 1, "reverse_epochs": 1,
             "tru_epochs": 1, "tru_repair_epochs": 1, "tru_stop": "epochs"}   # TRU takes its steps


@pytest.mark.parametrize("name", ["VBPR", "BPR"])
@pytest.mark.parametrize("method", METHODS)
def test_every_method_changes_the_model(trained, name, method):
    base = trained(name)
    config, data, model, trainer = base.setup(method, forget_regime="interaction", forget_share=0.1, **ONE_EPOCH)
    before = state(model)
    assert all(torch.equal(before[k], v) for k, v in base.original.state_dict().items())
    out = trainer.unlearn()
    assert out is model
    after = state(model)
    changed = [k for k in after if not torch.equal(after[k], before[k])]
    assert changed, f"{method} left {name} unchanged"
    assert all(torch.isfinite(v).all() for v in after.values())
    assert trainer.seconds > 0
    if method != "retrain":
        assert len(trainer.log) >= 1 and all(math.isfinite(r["loss"]) for r in trainer.log)


@pytest.mark.parametrize("setting, expected", [(None, "training"), (0.02, 0.02)])
def test_repair_steps_at_the_training_learning_rate_unless_set(trained, setting, expected):
    """``tru_repair_learning_rate: ~`` (the default) repairs at the backbone's own ``learning_rate``;
    a number sets it."""
    base = trained("VBPR")
    config, _, _, trainer = base.setup(forget_regime="interaction", learning_rate=0.0037,
                                       tru_repair_learning_rate=setting)
    trainer._start_repair()
    lr = 0.0037 if expected == "training" else expected
    assert trainer.repair_learning_rate() == lr
    assert [g["lr"] for g in trainer.optimizer.param_groups] == [lr] * len(trainer.optimizer.param_groups)


def test_no_repair_when_the_guarded_stop_returns_the_unedited_state(trained):
    """A stop met at the first check (delta above any distance) returns the state before any
    targeted step; nothing was edited, so there is no repair and no parameter moves."""
    base = trained("VBPR")
    _, _, model, trainer = base.setup(forget_regime="interaction", tru_stop_delta=2.0, tru_reset=False,
                                      tru_repair_epochs=2)
    before = state(model)
    trainer.unlearn()
    assert trainer.step == 0 and trainer.stopper.best_check == 0
    assert "no repair" in trainer.stop_reason
    for name, tensor in state(model).items():
        assert torch.equal(tensor, before[name]), name


def test_after_a_stop_at_the_first_check_only_reset_items_are_repaired(trained):
    """Item regime, stop met at the first check: the reset re-drew the deleted items' ID rows, so
    the repair covers those items' pairs only, with a budget proportional to their number."""
    base = trained("VBPR")
    _, data, _, trainer = base.setup(forget_regime="item", tru_stop_delta=2.0, tru_repair_budget=2)
    trainer.unlearn()
    f = data.forget
    assert trainer.step == 0 and len(f.deleted_items) > 0
    pairs = trainer.repair_pairs
    assert np.isin(f.items[pairs], f.deleted_items).all()
    rows = trainer.last_repair_rows
    assert len(rows) == round(2 * len(pairs))
    touched = np.isin(data.retain_users[rows], f.users[pairs]) | np.isin(data.retain_items[rows], f.items[pairs])
    assert touched.all()
    assert "reset item(s) only" in trainer.stop_reason


def test_checks_rank_against_the_item_sample_when_the_catalogue_is_larger(trained):
    """``tru_rank_sample``: exact ranks while the catalogue is no larger than the sample (the
    default on the tiny data); otherwise one seeded sample, the same at every check, and every
    check's ranks are the sampled estimates of :func:`pair_ranks` under the model of that check."""
    from recbole_tru.unlearn import tru as tru_module

    base = trained("VBPR")
    _, _, _, exact = base.setup(forget_regime="interaction")
    assert exact.rank_sample is None                             # 60 items < 4096
    _, data, model, trainer = base.setup(forget_regime="interaction", tru_rank_sample=20, tru_check_steps=1,
                                           tru_stop="epochs", tru_epochs=3, tru_batch_size=4)
    _, _, _, again = base.setup(forget_regime="interaction", tru_rank_sample=20)
    sample = trainer.rank_sample
    assert len(sample) == 20 and np.array_equal(sample, again.rank_sample)    # seeded
    seen = []
    original = tru_module.pair_ranks

    def spy(model_, users, items, history=None, candidates=None, **kw):
        seen.append(candidates)
        return original(model_, users, items, history, candidates=candidates, **kw)

    tru_module.pair_ranks = spy
    try:
        trainer.unlearn()
    finally:
        tru_module.pair_ranks = original
    assert len(seen) >= 2 and all(c is sample for c in seen)
    assert all(np.isfinite(r["distance"]) for r in trainer.checks if "distance" in r)


# --------------------------------------------------------------------------- 9. explicit phases

def test_until_stop_yields_until_the_stop_and_draws_the_rest():
    """The guarded stop ends a pass before a step; the rest of the pass is drawn, not yielded."""
    drawn = []

    class Loader:
        shuffle = True

        def __iter__(self):
            for i in range(6):
                drawn.append(i)
                yield i

        def __len__(self):
            return 6

    answers = iter([False, False, True])
    batches = UntilStop(Loader(), lambda: next(answers))
    assert list(batches) == [0, 1] and batches.stopped
    assert drawn == list(range(6)) and len(batches) == 6 and batches.shuffle is True
    never = UntilStop(Loader(), lambda: False)
    assert list(never) == list(range(6)) and not never.stopped


@pytest.mark.parametrize("name", ["VBPR", "MMGCN"])
def test_tru_runs_its_phases_in_order_without_idle_passes(trained, name):
    """Targeted passes, then exactly ``tru_repair_epochs`` repair passes (or none when the stop
    returned the unedited state), numbered in order; every pass trained on something."""
    config, data, model, trainer = trained(name).setup(forget_regime="item", forget_share=0.1, tru_check_steps=1,
                                                       tru_stop_patience=1, tru_batch_size=4, tru_repair_epochs=2)
    trainer.unlearn()
    phases = [r["phase"] for r in trainer.log]
    n_targeted = phases.count("targeted")
    assert phases == ["targeted"] * n_targeted + ["repair"] * (len(phases) - n_targeted)
    assert [r["epoch"] for r in trainer.log] == list(range(len(phases)))
    assert 1 <= n_targeted <= config["tru_epochs"]
    assert phases.count("repair") == (0 if "no repair" in trainer.stop_reason else 2)
    assert all(r["loss"] > 0 for r in trainer.log[:n_targeted - 1] + trainer.log[n_targeted:])
    seconds = trainer.phase_seconds
    assert {"reset", "checks", "targeted_steps"} <= set(seconds) and all(v >= 0 for v in seconds.values())
    assert ("repair" in seconds) == ("repair" in phases)
    assert not any(p.requires_grad is False for p in model.parameters())     # nothing left frozen


@pytest.mark.parametrize("model", ["VBPR", "MMGCN"])
def test_a_one_item_request_stops_at_its_noise_floor(trained, model):
    """One deleted item has a few pairs, whose rank AUC against the cold-item reference cannot get
    within delta of chance at that sample size: with the floor TRU stops once the distance is
    below it (fewer targeted steps); without it, it runs until the distance rises or the epochs
    end. A request of a thousand pairs has a floor below delta, so the rule never fires there."""
    t = trained(model)
    runs = {}
    for noise in (False, True):
        _, data, _, trainer = t.setup(forget_regime="item", forget_share=0.01, forget_seed=5,
                                      tru_stop_noise=noise, tru_epochs=10, tru_check_steps=1)
        trainer.unlearn()
        runs[noise] = trainer
    assert len(data.forget.deleted_items) == 1 and len(data.forget) < 40
    floor = [c["noise"] for c in runs[True].checks if "noise" in c]
    assert floor and all(f > 0.01 for f in floor)
    assert "noise floor" in runs[True].stop_reason and "noise floor" not in runs[False].stop_reason
    assert runs[True].step < runs[False].step
    stopped = [c for c in runs[True].checks if "noise" in c]
    assert stopped[-1]["distance"] < stopped[-1]["noise"]
    assert all(c["distance"] >= c["noise"] for c in stopped[:-1])          # the first check below the floor
    same = [c["distance"] for c in runs[False].checks if "noise" in c][:len(stopped)]
    assert same == [c["distance"] for c in stopped]                          # the same run up to there


def test_adaptive_check_interval_projects_the_distance_to_its_target():
    """``tru_check_adaptive``: the next check comes after floor(distance / rate) steps (at or
    before the projected crossing of 0), 1 to ``tru_check_steps``, where rate is the drop of the
    distance per step between the last two checks (hand-computed cases); off, or without a
    drop, it is ``tru_check_steps``."""
    from recbole_tru.unlearn.tru import TRUTrainer

    class Fake:
        check_interval = TRUTrainer.check_interval

        def __init__(self, adaptive, checks):
            self.opts = {"check_steps": 5, "check_adaptive": adaptive}
            self.checks = checks

        def option(self, key):
            return self.opts[key]

    def record(step, distance):
        return {"step": step, "distance": distance}

    first = [record(0, 0.379)]
    falling = [record(0, 0.379), {"step": 1, "cos_id": 0.1}, record(5, 0.134)]
    assert Fake(True, first).check_interval() == 5                       # one check: no rate yet
    assert Fake(False, falling).check_interval() == 5
    # rate (0.379 - 0.134) / 5 = 0.049 per step; 0.134 / 0.049 = 2.73 -> 2
    assert Fake(True, falling).check_interval() == 2
    near = [record(5, 0.134), record(7, 0.06)]                           # 0.06 / 0.037 = 1.6 -> 1
    assert Fake(True, near).check_interval() == 1
    assert Fake(True, [record(7, 0.06), record(8, 0.001)]).check_interval() == 1     # 0.017 -> at least 1
    slow = [record(0, 0.50), record(5, 0.49)]                             # 0.49 / 0.002 = 245
    assert Fake(True, slow).check_interval() == 5
    assert Fake(True, [record(0, 0.1), record(5, 0.2)]).check_interval() == 5      # rising: no projection
    assert Fake(True, [record(0, 0.1), record(5, 0.1)]).check_interval() == 5      # flat


def test_adaptive_checks_come_sooner_near_the_target_and_off_is_every_check_steps(trained):
    """On a request whose distance falls fast, the adaptive schedule checks between the fixed
    one's checks; off, the checks are exactly at multiples of ``tru_check_steps``; both schedules
    agree up to the first check where the projection shortens the interval."""
    runs = {}
    for adaptive in (False, True):
        _, _, _, trainer = trained("VBPR").setup(forget_regime="interaction", tru_check_steps=4, tru_batch_size=4,
                                                 tru_check_adaptive=adaptive, tru_stop_delta=0.0, tru_epochs=4,
                                                 tru_stop_refine=0)   # the schedule alone
        trainer.unlearn()
        runs[adaptive] = [c for c in trainer.checks if "distance" in c]
    fixed, adaptive = runs[False], runs[True]
    assert all(c["step"] % 4 == 0 for c in fixed[:-1])                   # the last: after the final pass
    steps = [c["step"] for c in adaptive]
    gaps = np.diff(steps)
    assert (gaps >= 1).all() and (gaps[:-1] <= 4).all()
    n = next((i for i, g in enumerate(gaps) if g != 4), len(gaps))
    assert n < len(gaps) - 1 and gaps[n] < 4                             # one check came sooner
    assert [c["distance"] for c in adaptive[:n + 1]] == [c["distance"] for c in fixed[:n + 1]]


def test_the_stop_offer_keeps_the_lowest_state_without_counting_a_check():
    """``GuardedStop.offer`` (a state between two checks) keeps the lowest distance's state, and
    is neither a check nor a rise."""
    from recbole_tru.unlearn.gate import GuardedStop

    stop = GuardedStop(0.01, patience=2)
    stop.update(0.3, lambda: "first")
    stop.update(0.2, lambda: "second")
    stop.offer(0.25, lambda: "not kept")
    assert (stop.best, stop.best_state, stop.checks) == (0.2, "second", 2)
    stop.offer(0.05, lambda: "between")
    assert (stop.best, stop.best_state, stop.best_check, stop.checks, stop.rises) == (0.05, "between", 2, 2, 0)
    assert stop.reason is None
    assert stop.offer(0.03, lambda: "under the noise floor", noise=0.04)          # below max(delta, noise)
    assert stop.best_state == "under the noise floor" and stop.reason.startswith("crossing refined: distance 0.0300 < 0.0400")


def test_stop_refine_searches_the_crossing_between_two_checks(trained):
    """``tru_stop_refine``: where a check finds the forget pairs past their reference, extra checks
    on the line between the two states (same step count); the run is the unrefined one up to
    there; TRU returns the refined state (no repair: re-ranked, it reads the refined distance)."""
    runs = {}
    for refine in (0, 3):
        _, _, _, trainer = trained("VBPR").setup(forget_regime="interaction", tru_check_steps=4, tru_batch_size=4,
                                                 tru_stop_refine=refine, tru_epochs=4, tru_repair_epochs=0,
                                                 tru_learning_rate=0.1)
        model = trainer.unlearn()
        runs[refine] = (trainer, model)
    plain = [c for c in runs[0][0].checks if "distance" in c]
    trainer, model = runs[3]
    checks = [c for c in trainer.checks if "distance" in c]
    first = next(i for i, c in enumerate(checks) if c.get("phase") == "refine")
    crossing = checks[first - 1]
    assert crossing["signed_partial"] * checks[first - 2]["signed_partial"] < 0       # passed the reference
    assert [c["distance"] for c in checks[:first]] == [c["distance"] for c in plain[:first]]
    refined = checks[first:]
    assert all(c["step"] == crossing["step"] and 0 < c["t"] < 1 for c in refined)
    assert trainer.stop_reason.startswith("crossing refined") and trainer.step == crossing["step"]
    assert refined[-1]["distance"] < 0.01 <= min(c["distance"] for c in checks[:first])
    assert trainer._check(phase="after") == pytest.approx(refined[-1]["distance"])     # the state returned
    # what a check keeps for the search: the routed rows only (isolation), each a row of its table
    trainer._freeze(set(trainer.routed_rows))          # as during the targeted update (unlearn() unfroze them)
    moving = trainer._moving_state()
    assert set(moving) == set(trainer.routed_rows)
    for name, (rows, values) in moving.items():
        assert len(rows) == int(trainer.routed_rows[name].sum()) and torch.equal(values, trainer.params[name][rows])


def test_repair_first_runs_the_repair_before_the_targeted_update(trained):
    """``tru_repair_first``: the repair's passes are logged before the targeted update's, the state
    the guarded stop keeps is the one returned (no repair after it), and nothing stays frozen."""
    base = trained("VBPR")
    _, _, model, trainer = base.setup(forget_regime="interaction", tru_repair_first=True, tru_repair_epochs=2,
                                      tru_epochs=2, tru_stop="epochs", tru_batch_size=4)
    trainer.unlearn()
    phases = [r["phase"] for r in trainer.log]
    assert phases[:2] == ["repair", "repair"] and set(phases[2:]) == {"targeted"}
    assert "repaired before the targeted update" in trainer.stop_reason
    assert all(p.requires_grad for p in model.parameters())
    _, _, _, default = base.setup(forget_regime="interaction", tru_repair_epochs=2, tru_epochs=2, tru_stop="epochs",
                                  tru_batch_size=4)
    default.unlearn()
    assert [r["phase"] for r in default.log][-2:] == ["repair", "repair"]


def test_repair_gate_is_off_by_default_and_refuses_unknown_values(trained):
    """``tru_repair_gate: none`` (default): the repair's loss is the backbone's own BPR loss; an
    unknown value is refused with the key's name."""
    base = trained("VBPR")
    _, _, model, trainer = base.setup(forget_regime="interaction")
    assert trainer._repair_loss() == model.calculate_loss
    _, _, _, bad = base.setup(forget_regime="interaction", tru_repair_gate="sideways")
    with pytest.raises(ValueError, match="tru_repair_gate"):
        bad._repair_loss()


@pytest.mark.parametrize("signed, expected", [(0.05, [0.4, 0.0, 0.0]), (-0.05, [0.0, -0.7, 0.0]), (0.005, [0.0, 0.0, 0.0])])
def test_guarded_repair_pushes_only_toward_the_reference(signed, expected):
    """``tru_repair_gate: guarded``: above the reference by more than delta, only the pairs above
    their targets keep their (positive) gate; below it by as much, only those below (negative:
    pulled up); within delta, no push."""
    from recbole_tru.unlearn.tru import TRUTrainer

    class Fake:
        _guard_repair_gate = TRUTrainer._guard_repair_gate

        def __init__(self):
            self.opts = {"stop_delta": 0.01, "stop_noise": True}
            self.partial_pair = np.array([True, True, True, False])
            self.item_pair = np.zeros(4, dtype=bool)
            self.weights = np.array([0.4, -0.7, 0.0, 0.9])
            self.checks = [{"signed_partial": signed}]

        def option(self, key):
            return self.opts[key]

    fake = Fake()
    fake._guard_repair_gate()
    assert fake.weights[:3].tolist() == expected and fake.weights[3] == 0.9       # other groups untouched
    assert fake.checks[-1]["repair_push_partial"] == int(np.sign(expected[0] + expected[1]))


def test_guarded_repair_checks_during_the_repair(trained):
    """After a targeted update, a guarded repair re-ranks every ``tru_check_steps`` repair steps
    (checks marked ``phase: repair``, each with the push's direction)."""
    base = trained("VBPR")
    _, _, _, trainer = base.setup(forget_regime="interaction", tru_repair_gate="guarded", tru_stop="epochs",
                                  tru_epochs=1, tru_batch_size=4, tru_repair_epochs=1, tru_repair_batch_size=4,
                                  tru_check_steps=2)
    trainer.unlearn()
    repair_checks = [c for c in trainer.checks if c.get("phase") == "repair"]
    assert trainer.step > 0 and len(repair_checks) == math.ceil(trainer._repair_steps / 2) >= 1
    assert all(c["repair_push_partial"] in (-1, 0, 1) for c in repair_checks)


def test_guarded_repair_reads_the_checks_auc_noise_floor():
    """For a group stopped on the rank AUC, the guarded repair's threshold is the check's noise
    floor when that exceeds delta: a signed AUC of 0.05 under a floor of 0.09 pushes nothing;
    above the floor it pushes down."""
    from recbole_tru.unlearn.tru import TRUTrainer

    class Fake:
        _guard_repair_gate = TRUTrainer._guard_repair_gate

        def __init__(self, signed):
            self.partial_pair = np.zeros(2, dtype=bool)
            self.item_pair = np.ones(2, dtype=bool)
            self.weights = np.array([0.6, -0.2])
            self.checks = [{"signed_item": signed, "auc_noise_item": 0.09}]

        def option(self, key):
            return {"stop_delta": 0.01, "stop_noise": True}[key]

    within, above = Fake(0.05), Fake(0.12)
    within._guard_repair_gate()
    above._guard_repair_gate()
    assert within.weights.tolist() == [0.0, 0.0] and within.checks[-1]["repair_push_item"] == 0
    assert above.weights.tolist() == [0.6, 0.0] and above.checks[-1]["repair_push_item"] == 1


@pytest.mark.parametrize("setting, rows, expected", [(True, 10 ** 9, True), (False, 0, False), ("auto", 0, True),
                                                     ("auto", 10 ** 9, False)])
def test_sparse_grad_setting(trained, monkeypatch, setting, rows, expected):
    """``tru_sparse_grad``: True / False as given; ``auto`` by the tables' rows (users + items)
    against SPARSE_ROWS; the lookups are switched only while TRU runs, never for MMGCN."""
    import recbole_tru.unlearn.tru as tru_module
    monkeypatch.setattr(tru_module, "SPARSE_ROWS", rows)
    config, data, model, trainer = trained("VBPR").setup(forget_regime="interaction", forget_share=0.1,
                                                         tru_sparse_grad=setting, tru_epochs=1)
    assert trainer.sparse_grad() is expected
    seen = []
    original = trainer.targeted_loss
    trainer.targeted_loss = lambda batch: (seen.append(model.user_embedding.sparse), original(batch))[1]
    trainer.unlearn()
    assert seen and all(flag is expected for flag in seen)
    assert not model.user_embedding.sparse                       # restored after the run
    _, _, mmgcn, mmgcn_trainer = trained("MMGCN").setup(forget_regime="interaction", forget_share=0.1,
                                                        tru_sparse_grad=True)
    assert isinstance(mmgcn_trainer._lookups(), contextlib.nullcontext)

