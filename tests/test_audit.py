"""Privacy audit: the attack interface on synthetic features, the pair features, the pair sets
(fit and evaluation disjoint, with a memorising attack that a leak would expose), determinism,
the interaction attack on an original vs a retrained model, the user-level attack, and the
held-out users."""

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny_config, write_tiny_dataset
from recbole_tru.audit import Audit
from recbole_tru.audit.attacks import (ATTACKS, Attack, LogisticAttack, ThresholdAttack, as_matrix,
                                       make_attack)
from recbole_tru.audit.features import OUTPUT_FEATURES, pair_features
from recbole_tru.audit.interaction import (PAIR, SUITE, AttackSpec, InteractionAudit, Pairs, PairSets,
                                           check_disjoint, known_pairs, sample_unseen, suite_from)
from recbole_tru.data.forget import select_forget
from recbole_tru.data.retained import UnlearnData, with_overrides
from recbole_tru.data.split import csr, hold_out_users, split_loaders
from recbole_tru.training import fit, load_data, quiet_logging

DATASET = "audit-mm"
KINDS = {"threshold": dict(column="x"), "logistic": dict(columns=["x"]),
         "boosting": dict(columns=["x"]), "mlp": dict(columns=["x"])}


# --------------------------------------------------------------------------- 1. attacks

def _features(values):
    return {"x": np.asarray(values, dtype=np.float64)}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_separable_features_give_auc_one(kind):
    rng = np.random.default_rng(0)
    member = lambda n: _features(rng.uniform(1, 2, n))            # noqa: E731
    nonmember = lambda n: _features(rng.uniform(-2, -1, n))       # noqa: E731
    attack = make_attack(kind, seed=0, **KINDS[kind]).fit(member(500), nonmember(500))
    assert attack.report(member(300), nonmember(300)) > 0.99


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_identical_distributions_give_half(kind):
    rng = np.random.default_rng(1)
    draw = lambda n: _features(rng.normal(size=n))                # noqa: E731
    attack = make_attack(kind, seed=0, **KINDS[kind]).fit(draw(3000), draw(3000))
    assert attack.report(draw(3000), draw(3000)) == pytest.approx(0.5, abs=0.05)


def test_threshold_orientation():
    rng = np.random.default_rng(2)
    low, high = _features(rng.normal(-1, 1, 2000)), _features(rng.normal(1, 1, 2000))
    fitted = ThresholdAttack("x").fit(low, high)                  # members score LOWER here
    assert fitted.sign == -1
    assert fitted.report(low, high) > 0.85
    fixed = ThresholdAttack("x", sign=1).fit(low, high)           # a given sign is not refitted
    assert fixed.sign == 1
    assert fixed.report(low, high) < 0.15
    np.testing.assert_allclose(fixed.score(low), low["x"])
    with pytest.raises(ValueError, match="sign"):
        ThresholdAttack("x", sign=2)


def test_drop_attack_reads_the_score_fall_unfitted_where_the_fitted_delta_follows_its_fit():
    """``drop`` calls deleted the pairs whose score fell most since the original, whatever its
    fitting sets say; the fitted ``delta`` takes its orientation from fitting sets in which no
    pair was deleted, so the same evaluation pairs read either way round (as measured on the
    calibration requests, docs/audit.md)."""
    def feats(score, delta):
        return {"score": np.asarray(score, float), "delta": np.asarray(delta, float)}
    fell, kept = feats([1.0, 1.0, 1.0], [-2.0, -1.5, -3.0]), feats([1.0, 1.0, 1.0], [0.0, 0.1, -0.2])
    # by hand: every fallen pair's -delta (1.5 .. 3) is above every kept pair's (-0.1 .. 0.2): AUC 1
    for fit_m, fit_n in ((feats([1, 1], [0.3, 0.2]), feats([1, 1], [-0.3, -0.2])),
                         (feats([1, 1], [-0.3, -0.2]), feats([1, 1], [0.3, 0.2]))):
        assert SUITE["drop"].make(0).fit(fit_m, fit_n).report(fell, kept) == 1.0
    rising = SUITE["delta"].make(0).fit(feats([1, 1], [0.3, 0.2]), feats([1, 1], [-0.3, -0.2]))
    falling = SUITE["delta"].make(0).fit(feats([1, 1], [-0.3, -0.2]), feats([1, 1], [0.3, 0.2]))
    assert rising.report(fell, kept) == 0.0 and falling.report(fell, kept) == 1.0
    nothing = feats([1.0, 1.0], [0.0, 0.0])                      # the original: delta = 0 everywhere
    assert SUITE["drop"].make(0).fit(nothing, nothing).report(nothing, nothing) == 0.5


def test_attack_interface_fails_loudly():
    with pytest.raises(ValueError, match="Unknown attack 'logistc'.*logistic"):
        make_attack("logistc")
    with pytest.raises(RuntimeError, match="before fit"):
        LogisticAttack(["x"]).score(_features([1.0]))
    with pytest.raises(KeyError, match="not computed"):
        LogisticAttack(["y"]).fit(_features([1.0]), _features([0.0]))
    with pytest.raises(ValueError, match="members and non-members"):
        LogisticAttack(["x"]).fit(_features([]), _features([0.0]))
    with pytest.raises(ValueError, match="unknown attack"):
        suite_from(["logistic", "rnak"])
    assert set(ATTACKS) == set(KINDS)
    assert as_matrix({"a": [1, 2], "b": [3, 4]}, ["b", "a"]).tolist() == [[3, 1], [4, 2]]


def test_seeded_attacks_are_deterministic():
    rng = np.random.default_rng(3)
    x = {"x": rng.normal(size=400), "y": rng.normal(size=400)}
    y = {"x": rng.normal(0.3, 1, 400), "y": rng.normal(size=400)}
    for kind in ("logistic", "boosting", "mlp"):
        a = make_attack(kind, columns=["x", "y"], seed=5).fit(x, y).score(x)
        b = make_attack(kind, columns=["x", "y"], seed=5).fit(x, y).score(x)
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- 2. pair features

class TableModel:
    """A stand-in recommender with a fixed score table (what ``user_scores`` calls)."""

    USER_ID, training, device = "user_id", False, "cpu"

    def __init__(self, table):
        import torch

        self.table = torch.as_tensor(table, dtype=torch.float32)

    def eval(self):
        return self

    def train(self, mode=True):
        return self

    def full_sort_predict(self, interaction):
        return self.table[interaction["user_id"]]


def test_pair_features_match_a_direct_computation():
    rng = np.random.default_rng(4)
    n_users, n_items = 5, 30
    table = rng.normal(size=(n_users, n_items))
    known_u, known_i = rng.integers(1, n_users, 40), rng.integers(1, n_items, 40)
    hist_u, hist_i = known_u[:25], known_i[:25]
    known, history = csr(known_u, known_i, n_users), csr(hist_u, hist_i, n_users)
    users = np.r_[known_u[:10], rng.integers(1, n_users, 10)]
    items = np.r_[known_i[:10], rng.integers(1, n_items, 10)]
    got = pair_features(TableModel(table), users, items, known, history, chunk=2)
    assert set(got) == set(OUTPUT_FEATURES)
    for n, (u, i) in enumerate(zip(users, items)):
        s = table[u]
        mine = set(known_i[known_u == u]) | {0}
        pool = np.array([s[j] for j in range(n_items) if j not in mine])
        hist = [j for j in set(hist_i[hist_u == u]) if j != i]
        expect = {"score": s[i], "log_rank": np.log(1 + (pool > s[i]).sum()),
                  "pct": (1 + (pool > s[i]).sum()) / (len(pool) + 1),
                  "margin_top1": s[i] - pool.max(), "margin_top10": s[i] - np.sort(pool)[-10:].mean(),
                  "zscore": (s[i] - pool.mean()) / pool.std(),
                  "margin_hist": s[i] - (s[hist].mean() if hist else pool.mean())}
        for name, value in expect.items():
            assert got[name][n] == pytest.approx(value, rel=1e-4, abs=1e-4), (name, u, i)


def test_sampled_unseen_pairs_are_never_known():
    rng = np.random.default_rng(5)
    n_items = 12
    known = Pairs(rng.integers(0, 6, 50), rng.integers(1, n_items, 50))
    keys = np.unique(known.keys(n_items))
    pairs = sample_unseen(rng.integers(0, 6, 500), keys, n_items, rng)
    assert not np.isin(pairs.keys(n_items), keys).any()
    assert pairs.items.min() >= 1


# --------------------------------------------------------------------------- 3. scenarios on tiny data

@pytest.fixture(scope="module")
def root(tmp_path_factory):
    folder = tmp_path_factory.mktemp("audit_data")
    write_tiny_dataset(folder, name=DATASET, n_users=200, n_items=100, per_user=(8, 20), seed=3)
    return folder


def make_config(root, workdir, **overrides):
    # embedding 32 and 40 epochs without early stopping: enough capacity to memorise
    return tiny_config(root, "VBPR", workdir, dataset=DATASET, **{
        "epochs": 40, "stopping_step": 1000, "learning_rate": 0.01, "embedding_size": 32, "forget_share": 0.2,
        **overrides})


class Scenario:
    """An original model, a forget set and the model retrained without it."""

    def __init__(self, config, held_out_users=False):
        quiet_logging()
        self.config = config
        _, train, valid, test = load_data(config)
        self.held_out = None
        if held_out_users:
            datasets, self.held_out = hold_out_users(config, train.dataset, valid.dataset, test.dataset)
            train, valid, test = split_loaders(config, *datasets)
        self.original, _, _ = fit(config, train, valid)
        forget = select_forget(config, train.dataset)
        self.data = UnlearnData(config, train.dataset, valid.dataset, test.dataset, forget)
        self.retrained, _, _ = fit(config, self.data.retain_loader(), self.data.eval_loader("valid"))

    def audit(self, **overrides):
        config = with_overrides(self.config, **overrides)
        return Audit(config, self.data, self.original, held_out=self.held_out)


@pytest.fixture(scope="module")
def interaction(root, workdir):
    return Scenario(make_config(root, workdir, forget_regime="interaction"))


@pytest.fixture(scope="module")
def user_regime(root, workdir):
    return Scenario(make_config(root, workdir, forget_regime="user", forget_share=0.1,
                                audit_user_holdout=0.1), held_out_users=True)


def _keys(pairs, n_items):
    return set(pairs.keys(n_items).tolist())


def test_fit_and_eval_pairs_are_disjoint_and_as_specified(interaction):
    data, sets = interaction.data, interaction.audit().sets
    n = data.n_items
    fit_keys = set().union(*(_keys(getattr(sets, s), n) for s in
                             ("fit_members", "fit_nonmembers", "shadow_members", "shadow_nonmembers")))
    eval_keys = _keys(sets.eval_members, n) | _keys(sets.eval_nonmembers, n)
    assert not fit_keys & eval_keys
    # evaluation: every forget pair vs half of the test pairs; fitting: the other half + unseen
    assert _keys(sets.eval_members, n) == _keys(Pairs(data.forget.users, data.forget.items), n)
    test = Pairs(data.test_dataset.inter_feat["user_id"].numpy(), data.test_dataset.inter_feat["item_id"].numpy())
    retained = _keys(Pairs(data.retain_users, data.retain_items), n)
    known = _keys(known_pairs(data), n)
    assert _keys(sets.eval_nonmembers, n) <= _keys(test, n)
    assert abs(len(sets.eval_nonmembers) - len(test) / 2) <= 1
    assert _keys(sets.fit_members, n) <= retained
    fit_test = _keys(sets.fit_nonmembers, n) & known
    assert fit_test <= _keys(test, n) - _keys(sets.eval_nonmembers, n) and fit_test
    assert len(_keys(sets.fit_nonmembers, n) - known) > 0.4 * len(sets.fit_nonmembers)  # sampled unseen pairs


class Memorise(Attack):
    """Scores a pair 1 / 0 if it was a fitted member / non-member, 0.5 otherwise: it can only
    beat chance on pairs it was fitted on."""

    columns = [PAIR]

    def _fit(self, x, y):
        self.table = dict(zip(x[:, 0].tolist(), y.tolist()))

    def _score(self, x):
        return np.array([self.table.get(k, 0.5) for k in x[:, 0].tolist()])


def test_a_memorising_attack_gains_nothing_so_no_fit_pair_is_evaluated(interaction):
    spec = AttackSpec("memorise", lambda seed: Memorise())
    config = with_overrides(interaction.config, audit_headline="memorise", audit_shadow=False)
    audit = Audit(config, interaction.data, interaction.original, suite=[spec])
    assert audit.run(interaction.original) == {"mia_auc": 0.5, "mia": {"memorise": 0.5},
                                               "mia_auc_user": None, "mia_user": None}
    # the control: evaluation sets that leak fitting pairs are refused, and would be caught
    sets = audit.sets
    leaky = PairSets(sets.fit_members, sets.fit_nonmembers,
                     Pairs.concat(sets.eval_members, sets.fit_members.take(np.arange(50))), sets.eval_nonmembers)
    with pytest.raises(AssertionError, match="also evaluation pairs"):
        check_disjoint(leaky, interaction.data.n_items)
    leak = InteractionAudit(interaction.data, leaky, interaction.original, [spec], seed=0)
    assert leak.run(interaction.original)["memorise"] > 0.55


def test_the_audit_is_seeded(interaction):
    models = (interaction.original, interaction.retrained)
    first = [interaction.audit().run(m) for m in models]
    again = [interaction.audit().run(m) for m in models]
    other = [interaction.audit(audit_seed=99).run(m) for m in models]
    assert first == again
    assert first != other
    assert all(set(r["mia"]) == set(SUITE) for r in first)


def test_the_interaction_attack_sees_the_forget_set_in_the_original_not_after_retraining(interaction):
    audit = interaction.audit()
    original, retrained = audit.run(interaction.original), audit.run(interaction.retrained)
    assert original["mia"]["delta"] == original["mia"]["score"]          # delta = 0 for the original
    assert original["mia"]["drop"] == 0.5                                # nothing fell
    assert retrained["mia"]["drop"] > 0.6     # retraining lowers the forgotten pairs more than held-out ones
    assert original["mia_auc"] > 0.6
    assert original["mia_auc"] - retrained["mia_auc"] > 0.1
    assert abs(retrained["mia_auc"] - 0.5) < 0.12
    for name in ("rank", "score", "margin", "shadow"):
        assert original["mia"][name] > retrained["mia"][name] + 0.05, name
    assert audit.interaction.shadow_fit_auc["shadow"] > 0.6
    assert original["mia_auc_user"] is None and original["mia_user"] is None
    info = audit.info()
    assert info["pairs"]["eval_members"] == len(interaction.data.forget)
    train_users = interaction.data.train_dataset.inter_feat["user_id"].numpy()
    assert info["shadow"]["in_users"] + info["shadow"]["out_users"] == len(np.unique(train_users))


def test_the_shadow_is_trained_once_per_original_whatever_the_request(interaction):
    """The shadow reads the original training data only: a second request against the same
    original loads the cached shadow (bit-identical), and its attack pairs still exclude the
    new request's forget set."""
    first = interaction.audit()
    d = interaction.data
    forget = select_forget(with_overrides(interaction.config, forget_seed=99), d.train_dataset)
    assert not np.array_equal(forget.rows, d.forget.rows)
    other = UnlearnData(interaction.config, d.train_dataset, d.original_valid_dataset, d.test_dataset, forget)
    cache = Path(interaction.config["output_dir"]) / "cache"
    shadows = sorted(cache.glob("*-shadow-*.pth"))
    second = Audit(interaction.config, other, interaction.original)
    assert shadows and sorted(cache.glob("*-shadow-*.pth")) == shadows          # loaded, not trained again
    assert np.array_equal(first.shadow.in_users, second.shadow.in_users)
    assert np.array_equal(first.shadow.rows, second.shadow.rows)
    for a, b in zip(first.shadow.model.state_dict().values(), second.shadow.model.state_dict().values()):
        assert torch.equal(a, b)
    forget_keys = Pairs(forget.users, forget.items).keys(d.n_items)
    assert not np.isin(second.sets.shadow_members.keys(d.n_items), forget_keys).any()


def test_no_shadow_drops_the_shadow_attack(interaction):
    out = interaction.audit(audit_shadow=False, audit_attacks=["rank", "logistic", "shadow"]).run(interaction.original)
    assert set(out["mia"]) == {"rank", "logistic"}
    with pytest.raises(ValueError, match="audit_headline"):
        interaction.audit(audit_shadow=False, audit_attacks=["rank"])


def test_user_level_attack_on_deleted_vs_never_seen_users(user_regime):
    audit = user_regime.audit()
    original, retrained = audit.run(user_regime.original), audit.run(user_regime.retrained)
    for out in (original, retrained):
        assert 0 <= out["mia_auc_user"] <= 1 and set(out["mia_user"]) == {"shadow", "distance"}
        assert 0 <= out["mia_auc"] <= 1
    assert audit.user.shadow_fit_auc > 0.6
    assert original["mia_auc_user"] > 0.75
    assert original["mia_auc_user"] > retrained["mia_auc_user"] + 0.2
    assert len(audit.user.deleted) == len(user_regime.data.forget.deleted_users)
    assert np.array_equal(audit.user.never, user_regime.held_out.users)


def test_hold_out_users_removes_every_row_and_returns_histories(root, workdir):
    config = make_config(root, workdir, audit_user_holdout=0.1)
    _, train, valid, test = load_data(config)
    datasets, held = hold_out_users(config, train.dataset, valid.dataset, test.dataset)
    active = np.unique(train.dataset.inter_feat["user_id"].numpy())
    assert len(held.users) == round(0.1 * len(active))
    for before, after in zip((train.dataset, valid.dataset, test.dataset), datasets):
        users = before.inter_feat["user_id"].numpy()
        assert not np.isin(after.inter_feat["user_id"].numpy(), held.users).any()
        assert len(after) == (~np.isin(users, held.users)).sum()
    mine = np.isin(train.dataset.inter_feat["user_id"].numpy(), held.users)
    expect = set(zip(train.dataset.inter_feat["user_id"].numpy()[mine].tolist(),
                     train.dataset.inter_feat["item_id"].numpy()[mine].tolist()))
    assert set(zip(held.history_users.tolist(), held.history_items.tolist())) == expect
    again = hold_out_users(config, train.dataset, valid.dataset, test.dataset)[1]
    assert np.array_equal(again.users, held.users) and again.digest() == held.digest()
    other = hold_out_users(with_overrides(config, audit_seed=7), train.dataset, valid.dataset, test.dataset)[1]
    assert not np.array_equal(other.users, held.users)
    loaders = split_loaders(config, *datasets)
    assert [len(loader.dataset) for loader in loaders] == [len(d) for d in datasets]


def test_audit_keys_are_declared(root, workdir):
    config = make_config(root, workdir)
    assert config["audit_enabled"] is True and config["audit_headline"] in config["audit_attacks"]
    with pytest.raises(KeyError, match="audit_pairz"):
        make_config(root, workdir, audit_pairz=10)


# --------------------------------------------------------------------------- the likelihood-ratio attack (lira)

LIRA = {"audit_lr": True, "audit_lr_refs": 2, "audit_shadow": False, "audit_attacks": ["rank", "logistic", "delta"]}


def test_tpr_at_low_fpr_by_hand():
    from recbole_tru.audit.likelihood import tpr_at_fpr

    nonmembers = np.linspace(0.0, 0.7, 100)
    assert tpr_at_fpr(np.array([0.9, 0.8, 0.3]), nonmembers) == pytest.approx(2 / 3)
    # 57 of the 100 non-members lie above 0.3: at an FPR of 0.6 the member 0.3 is caught too
    assert tpr_at_fpr(np.array([0.9, 0.8, 0.3]), nonmembers, fpr=0.5) == pytest.approx(2 / 3)
    assert tpr_at_fpr(np.array([0.9, 0.8, 0.3]), nonmembers, fpr=0.6) == pytest.approx(1.0)
    assert tpr_at_fpr(np.array([0.1]), nonmembers) == 0.0


def test_lira_sees_the_forget_set_in_the_original_not_after_retraining(interaction):
    audit = interaction.audit(**LIRA)
    original, retrained = audit.run(interaction.original), audit.run(interaction.retrained)
    assert original["mia"]["lira"] > 0.6
    assert original["mia"]["lira"] - retrained["mia"]["lira"] > 0.1
    assert abs(retrained["mia"]["lira"] - 0.5) < 0.12
    tpr = original["mia_tpr_at_1pct_fpr"]["lira"], retrained["mia_tpr_at_1pct_fpr"]["lira"]
    assert 0 <= tpr[1] < tpr[0] <= 1
    assert audit.info()["references"]["models"] == 2


def test_lira_calibrates_each_pair_by_the_model_that_left_it_out(interaction):
    """With the first reference model as the audited model, a forget pair that model never
    trained on is calibrated by that same model (Λ = 0 exactly); one it trained on, by the other
    half's model (Λ = z_0 - z_1)."""
    audit = interaction.audit(**LIRA)
    refs, lira, d = audit.references, audit.lira, interaction.data
    members, _ = lira.scores(refs.models[0])
    train = d.train_dataset
    keys = train.inter_feat["user_id"].numpy().astype(np.int64) * d.n_items + train.inter_feat["item_id"].numpy()
    forget_keys = d.forget.users.astype(np.int64) * d.n_items + d.forget.items
    in_first = np.isin(forget_keys, keys[refs.first_half[0]])
    assert 0 < in_first.sum() < len(in_first)
    assert np.all(members[~in_first] == 0)
    z0, z1 = lira._z(refs.models[0])[:len(members)], lira._z(refs.models[1])[:len(members)]
    assert np.allclose(members[in_first], (z0 - z1)[in_first])


def test_lira_references_are_trained_once_per_original(interaction):
    cache = Path(interaction.config["output_dir"]) / "cache"
    interaction.audit(**LIRA)
    references = sorted(cache.glob("*-reference-*.pth"))
    again = interaction.audit(**LIRA)
    assert len(references) >= 2 and sorted(cache.glob("*-reference-*.pth")) == references
    assert torch.equal(next(iter(again.references.models[0].state_dict().values())),
                       next(iter(interaction.audit(**LIRA).references.models[0].state_dict().values())))


def test_lira_needs_an_even_number_of_references(interaction):
    with pytest.raises(ValueError, match=r"'audit_lr_refs' must be an even number >= 2, got 3"):
        interaction.audit(**{**LIRA, "audit_lr_refs": 3})
