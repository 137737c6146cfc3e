"""Privacy audit of unlearning: membership-inference attacks on every audited model.

:class:`Audit` is built once per unlearning run (pair sets, shadow model, the original model's
scores, the user-level classifier) and :meth:`Audit.run` audits one model::

    audit = Audit(config, data, original, held_out=held_out)   # held_out: user regime only
    audit.run(model)  # {"mia_auc": float, "mia": {attack: AUC},
                      #  "mia_auc_user": float | None, "mia_user": {attack: AUC} | None}

* interaction level (:mod:`.interaction`): AUC of attacks telling forget pairs from held-out
  test pairs; ``mia_auc`` is the ``audit_headline`` attack's (``logistic``);
* user level (:mod:`.user`, Zhang et al. CCS 2021), when users were held out before training
  (:func:`recbole_tru.data.split.hold_out_users`) and the request deletes whole users: AUC telling deleted users from
  never-seen users.

A model that forgot the request as retraining does scores near the retrained model's AUC
(about 0.5). Everything is seeded by ``audit_seed``: the same seed gives the same numbers.
Building an ``Audit`` trains the shadow model (``audit_shadow``), which re-seeds the global
RNGs as every ``build_model`` does.
"""
from logging import getLogger

import numpy as np

from recbole_tru.audit.attacks import ATTACKS, Attack, make_attack
from recbole_tru.audit.interaction import SUITE, InteractionAudit, build_pair_sets, suite_from
from recbole_tru.audit.likelihood import LikelihoodRatioAudit, train_references
from recbole_tru.audit.shadow import train_shadow
from recbole_tru.audit.user import UserAudit

__all__ = ["Audit", "audit_rng", "Attack", "ATTACKS", "make_attack", "SUITE", "wants_held_out_users"]

# independent seed streams of one audit (a change in one part never shifts another's draws)
PAIRS, SHADOW, SVD, REFERENCES, COINS = 0, 1, 2, 3, 4


def audit_rng(config, stream):
    """The audit's seeded generator for one part (``PAIRS``, ``SHADOW``, ``SVD``): a change in one
    part never shifts another's draws, and a caller that prepares a part ahead (the shadow, say)
    draws exactly what the audit will."""
    return np.random.default_rng([int(config["audit_seed"]), stream])


def wants_held_out_users(config):
    """Whether the run should hold users out before training (user-level audit)."""
    return bool(config["audit_enabled"]) and bool(config["audit_shadow"]) and config["forget_regime"] == "user"


class Audit:
    """Membership-inference audit of one unlearning run (see the module docstring).

    Args:
        config: the run's Config (``audit_*`` keys).
        data (UnlearnData): retained data, forget set, validation and test.
        original: the original (not unlearned) model; its scores give the ``delta`` feature.
        held_out (HeldOutUsers): users held out of every split before training, or None (no
            user-level audit).
        suite (list of AttackSpec): the interaction attacks; default: config ``audit_attacks``.
    """

    def __init__(self, config, data, original, held_out=None, suite=None):
        self.seed = int(config["audit_seed"])
        self.headline = config["audit_headline"]
        use_shadow = bool(config["audit_shadow"])
        specs = suite if suite is not None else suite_from(list(config["audit_attacks"]), shadow=use_shadow)
        names = [spec.name for spec in specs]
        if self.headline not in names:
            raise ValueError(f"config key 'audit_headline' ({self.headline!r}) must name one of the audit's "
                             f"attacks {names}")
        self.shadow = train_shadow(config, data, audit_rng(config, SHADOW)) if use_shadow else None
        self.sets = build_pair_sets(data, audit_rng(config, PAIRS), int(config["audit_pairs"]),
                                    float(config["audit_unseen_ratio"]), self.shadow)
        self.interaction = InteractionAudit(data, self.sets, original, specs, self.seed,
                                            int(config["audit_chunk"]),
                                            self.shadow.model if self.shadow else None)
        self.references = self.lira = None
        if config["audit_lr"]:
            self.references = train_references(config, data, audit_rng(config, REFERENCES))
            self.lira = LikelihoodRatioAudit(data, self.sets.eval_members, self.sets.eval_nonmembers, self.references,
                                             self.interaction.known, self.interaction.history,
                                             audit_rng(config, COINS), int(config["audit_chunk"]))
        self.user = None
        if held_out is not None and self.shadow is not None and len(data.forget.deleted_users):
            self.user = UserAudit(config, data, self.shadow, held_out, audit_rng(config, SVD), self.seed)
        elif held_out is not None:
            getLogger().warning("audit: no user-level attack (needs audit_shadow and deleted users)")

    def info(self):
        """What the audit was built on (sizes, shadow model), for the results file."""
        out = {"seed": self.seed, "headline": self.headline,
               "pairs": {name: len(p) for name, p in self.sets.named().items()}}
        if self.shadow is not None:
            out["shadow"] = {"in_users": len(self.shadow.in_users), "out_users": len(self.shadow.out_users),
                             "train_pairs": len(self.shadow.rows), "epochs": self.shadow.summary["epochs"],
                             "seconds": self.shadow.summary["seconds"],
                             "fit_auc": getattr(self.interaction, "shadow_fit_auc", {})}
        if self.references is not None:
            out["references"] = {"models": len(self.references.models),
                                 "epochs": [s["epochs"] for s in self.references.summaries],
                                 "seconds": [s["seconds"] for s in self.references.summaries]}
        if self.user is not None:
            out["user"] = {"deleted_users": len(self.user.deleted), "never_seen_users": len(self.user.never),
                           "svd_dim": self.user.vectors.shape[1], "topk": self.user.k,
                           "shadow_fit_auc": self.user.shadow_fit_auc}
        return out

    def run(self, model):
        """Audit ``model``: ``{"mia_auc", "mia", "mia_auc_user", "mia_user"}``."""
        mia = self.interaction.run(model)
        out = {"mia_auc": mia[self.headline], "mia": mia, "mia_auc_user": None, "mia_user": None}
        if self.lira is not None:
            lira = self.lira.run(model)
            mia["lira"] = lira["auc"]
            out["mia_tpr_at_1pct_fpr"] = {"lira": lira["tpr_at_1pct_fpr"]}
        if self.user is not None:
            out["mia_auc_user"], out["mia_user"] = self.user.run(model)
        return out
