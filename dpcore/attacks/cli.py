"""``dpcore audit membership|one-run``: membership attacks on a stored run, and the one-run privacy audit.

>>> import argparse
>>> parser = argparse.ArgumentParser(prog="dpcore")
>>> register(parser.add_subparsers(dest="command"))
>>> args = parser.parse_args(["audit", "one-run", "--set", "mode=dp-lora", "--set", "epsilon=1", "--canaries", "50"])
>>> args.set, args.canaries, args.confidence
(['mode=dp-lora', 'epsilon=1'], 50, 0.95)
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from dpcore.attacks import audit
from dpcore.attacks.membership import OUTSIDE_EPSILON, AttackResult, attack_run, membership_entry
from dpcore.config import load_config


def _eps(value: float | None) -> str:
    return "none (not private)" if value is None or math.isinf(value) else f"{value:.3f}"


def _interval(value: float, lo: float, hi: float) -> str:
    return f"{value:.3f} [{lo:.3f}, {hi:.3f}]"


def _attack_lines(res: AttackResult) -> list[str]:
    lines = [
        f"  {res.attack} attack ({res.n_members} members, {res.n_nonmembers} non-members): "
        f"AUROC {_interval(res.auroc.value, res.auroc.lo, res.auroc.hi)}"
    ]
    for row in res.tpr_at_fpr:
        e = row.estimate
        mark = "" if row.resolved else "  (not resolved, see the note)"
        lines.append(f"    TPR at FPR {row.fpr:g}: {_interval(e.value, e.lo, e.hi)}{mark}")
    return lines


def _cmd_membership(args: argparse.Namespace) -> int:
    path = Path(args.result)
    data: dict[str, Any] = json.loads(path.read_text())
    if membership_entry(data) is None:
        raise ValueError(
            f"file {path}: the run kept no membership losses (train it with --set membership_sample=K)"
        )
    attacks = attack_run(data, n_bootstrap=args.bootstrap, seed=args.seed)
    privacy = data.get("privacy") or {}
    print(f"run {data.get('config_hash', '?')} ({data.get('config', {}).get('train', {}).get('mode', '?')})")
    print(
        f"  ε (RDP) {_eps(privacy.get('epsilon_rdp'))}, ε (PRV) {_eps(privacy.get('epsilon_prv'))}, "
        f"δ {privacy.get('delta', float('nan')):g}"
        if privacy
        else "  ε: none (not private)"
    )
    for res in attacks.values():
        for line in _attack_lines(res):
            print(line)
        for note in res.notes:
            print(f"    note: {note}")
    print(f"  outside ε: every number above is {OUTSIDE_EPSILON}")
    if args.json:
        Path(args.json).write_text(json.dumps({k: v.to_dict() for k, v in attacks.items()}, indent=1))
    return 0


def _cmd_one_run(args: argparse.Namespace) -> int:

    cfg = load_config(args.config, args.set)
    result = audit.one_run_audit(
        cfg, canaries=args.canaries, confidence=args.confidence, seed=args.seed, progress=not args.no_progress
    )
    b = result.bound
    print(
        f"one-run audit of {result.mode} (config {result.config_hash}), {b.m} canaries ({result.canary_kind})"
    )
    print(
        f"  {result.included} canaries trained on; guessed {b.k_plus} in and {b.k_minus} out: {b.correct} of {b.guesses} right"
    )
    print(f"  lower bound on ε at {b.confidence:.0%} confidence (δ = {b.delta:g}): {b.epsilon_lower:.3f}")
    print(f"  accountant ε: RDP {_eps(result.epsilon_rdp)}, PRV {_eps(result.epsilon_prv)}")
    if result.units is not None:
        print(
            f"  accounted over {result.units} {result.unit}s ({result.natural_units} natural, "
            f"{result.included} canaries), per-sample gradients by {result.grad_sample_mode}"
        )
    consistent = result.consistent()
    verdict = (
        "consistent: the bound does not exceed the reported ε"
        if consistent
        else (f"VIOLATION: the bound exceeds the reported ε = {result.reported_epsilon:.3f}")
    )
    print(f"  {verdict}")
    if args.json:
        Path(args.json).write_text(json.dumps(result.to_dict(), indent=1))
    return 0 if consistent else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``audit membership`` and ``audit one-run`` (their handlers are ``args.func``)."""
    audit_parser = subparsers.add_parser(
        "audit", help="membership attacks and an empirical audit of the DP guarantee"
    )
    sub = audit_parser.add_subparsers(dest="audit_command", required=True, metavar="ACTION")

    mia = sub.add_parser("membership", help="loss attack on a stored run's membership losses (outside ε)")
    mia.add_argument("result", help="a run's result JSON, trained with membership_sample > 0")
    mia.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)")
    mia.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    mia.add_argument("--json", help="also write the attacks (with ROC points) as JSON here")
    mia.set_defaults(func=_cmd_membership)

    one = sub.add_parser(
        "one-run", help="train once with canaries and bound ε from below; exit 1 if the bound exceeds ε"
    )
    one.add_argument("--config", help="YAML file of parameters (nested sections or flat keys)")
    one.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a parameter")
    one.add_argument(
        "--canaries", type=int, default=200, help="canaries m, each trained on with probability 1/2"
    )
    one.add_argument("--confidence", type=float, default=0.95, help="confidence of the lower bound (0.95)")
    one.add_argument("--seed", type=int, default=0, help="seed of the canaries and their inclusion")
    one.add_argument("--json", help="also write the audit as JSON here")
    one.add_argument("--no-progress", action="store_true", help="no progress bars")
    one.set_defaults(func=_cmd_one_run)
