"""Secure aggregation cost per round: pairwise masking against the plain sum the driver computes today.

For N hospitals (``--clients``, default 5) and one flat float64 vector per
hospital of each model's parameter count (small_cnn at 4 classes, torchvision
ResNet50 at 9 classes; parameters only, no buffers), one round of
``fedray.privacy.secure_aggregation`` is timed step by step:

- key agreement, per hospital: a fresh X25519 key pair (``ClientMasker``) and
  ``agree`` (N-1 X25519 exchanges and HKDF-SHA256 derivations);
- encode, per hospital: ``FixedPointCodec.encode`` (fixed point in Z_2^64);
- mask, per hospital: ``ClientMasker.mask``, i.e. encode plus N-1 ChaCha20
  keystreams of 8 bytes per coordinate added into the vector;
- unmask, at the driver: ``SecureAggregationSession.unmask_sum``, the ring sum
  of N masked vectors and the decode; decode alone is shown too;
- the plain sum, at the driver: N float64 vectors added, what FedAvg does without masking.

Hospitals run in parallel, so a masked round's critical path is one
hospital's key agreement + mask plus the driver's unmask (key relay and
transfers excluded; the payload column shows what travels: float32
parameters today, uint64 ring elements masked). Updates are random vectors
clipped to norm 1, the codec's bound. Each repetition runs a fresh session
(fresh keys); medians over repetitions (and hospitals) after ``--warmup``.

Read the minimum as the computing cost. Every round allocates fresh
8-bytes-per-parameter arrays, and on a virtual machine whose host backs guest
memory lazily (as here) faulting them in is sometimes slow: up to 0.8 s of
system time for one ResNet50 ``unmask_sum`` (the ring sum and its decode are
fresh arrays), against ~80 ms otherwise. The median shows that cost; on bare
metal it is the usual page-zeroing, tens of milliseconds.

    python benchmarks/secure_aggregation.py
    python benchmarks/secure_aggregation.py --models small_cnn --repeats 20
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from _common import markdown_table, median, save_json

SMALL_CNN_CLASSES = 4
RESNET50_CLASSES = 9  # the ISIC set's
CLIP_NORM = 1.0


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--models", default="small_cnn,resnet50", help="comma-separated: small_cnn, resnet50")
    p.add_argument("--clients", type=int, default=5, help="hospitals N")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds per model")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    return p.parse_args(argv)


def parameter_count(model_name: str) -> int:
    if model_name == "small_cnn":
        from fedray.models.small_cnn import SmallCNN

        model = SmallCNN(num_classes=SMALL_CNN_CLASSES)
    elif model_name == "resnet50":
        import torchvision

        model = torchvision.models.resnet50(weights=None, num_classes=RESNET50_CLASSES)
    else:
        raise SystemExit(f"unknown model {model_name!r}: choose small_cnn or resnet50")
    return sum(p.numel() for p in model.parameters())


def clipped_updates(num_clients: int, length: int) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(0)
    updates = {}
    for k in range(num_clients):
        raw = rng.standard_normal(length)
        updates[k] = raw * (CLIP_NORM / np.linalg.norm(raw))
    return updates


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def one_round(updates: dict[int, np.ndarray], length: int) -> dict[str, list[float]]:
    """Seconds of every step of one masked round and of the plain sum; per-hospital steps hold N entries."""
    from fedray.privacy.secure_aggregation import ClientMasker, SecureAggregationSession, clipped_update_bound

    session = SecureAggregationSession(participants=tuple(updates), round_idx=0, attempt=0, vector_length=length,
                                       value_bound=clipped_update_bound(CLIP_NORM))
    times: dict[str, list[float]] = {"keys": [], "encode": [], "mask": []}
    maskers = {}
    for k in updates:
        maskers[k], seconds = timed(lambda k=k: ClientMasker(session, k))
        times["keys"].append(seconds)
    relayed = {k: m.public_key for k, m in maskers.items()}
    for i, k in enumerate(updates):
        times["keys"][i] += timed(lambda k=k: maskers[k].agree(relayed))[1]
    codec = session.codec
    masked = {}
    for k, update in updates.items():
        times["encode"].append(timed(lambda update=update: codec.encode(update))[1])
        masked[k], seconds = timed(lambda k=k, update=update: maskers[k].mask(update))
        times["mask"].append(seconds)
    _, times["unmask"] = timed(lambda: session.unmask_sum(masked))
    _, times["decode"] = timed(lambda: codec.decode_sum(masked[0]))

    def plain_sum():
        total = np.zeros(length)
        for update in updates.values():
            total += update
        return total

    _, times["plain"] = timed(plain_sum)
    return {step: value if isinstance(value, list) else [value] for step, value in times.items()}


def bench_model(args, model_name: str) -> dict:
    length = parameter_count(model_name)
    updates = clipped_updates(args.clients, length)
    samples: dict[str, list[float]] = {}
    rounds = []
    for rep in range(args.warmup + args.repeats):
        times = one_round(updates, length)
        if rep < args.warmup:
            continue
        for step, values in times.items():
            samples.setdefault(step, []).extend(values)
        # hospitals in parallel: the slowest one's key agreement + mask, then the driver's unmask
        rounds.append(max(k + m for k, m in zip(times["keys"], times["mask"])) + times["unmask"][0])
    result = {"model": model_name, "parameters": length,
              **{f"{step}_ms": median(values) * 1e3 for step, values in samples.items()},
              **{f"{step}_min_ms": min(values) * 1e3 for step, values in samples.items()},
              "round_masked_ms": median(rounds) * 1e3, "round_masked_min_ms": min(rounds) * 1e3}
    result["round_plain_ms"], result["round_plain_min_ms"] = result["plain_ms"], result["plain_min_ms"]
    result["payload_plain_mib"] = 4 * length / 2**20
    result["payload_masked_mib"] = 8 * length / 2**20
    return result


def render(args, rows: list[dict]) -> str:
    from cryptography.hazmat.backends.openssl import backend

    head = (f"Secure aggregation per round, N={args.clients} hospitals, median of {args.repeats} rounds after "
            f"{args.warmup} warm-up; {platform.processor() or platform.machine()}, numpy {np.__version__}, "
            f"{backend.openssl_version_text()}")
    steps = [("keys", "key agreement: X25519 key pair + agree (N-1 exchanges + HKDF)", "each hospital"),
             ("encode", "encode to Z_2^64", "each hospital"),
             ("mask", f"mask() = encode + {args.clients - 1} ChaCha20 keystreams", "each hospital"),
             ("unmask", "unmask_sum = ring sum of N + decode", "driver"),
             ("decode", "decode alone", "driver"),
             ("plain", "plain float64 sum of N (no masking)", "driver")]
    step_rows = [[r["model"], label, who, r[f"{step}_ms"], r[f"{step}_min_ms"]]
                 for r in rows for step, label, who in steps]
    round_rows = [[r["model"], r["parameters"], r["round_plain_ms"], r["round_masked_ms"],
                   r["round_masked_ms"] / r["round_plain_ms"], r["round_plain_min_ms"], r["round_masked_min_ms"],
                   r["round_masked_min_ms"] / r["round_plain_min_ms"], r["payload_plain_mib"],
                   r["payload_masked_mib"]]
                  for r in rows]
    return "\n\n".join([
        head,
        markdown_table(["model", "step", "who", "median ms", "min ms"], step_rows),
        markdown_table(["model", "parameters", "round, plain sum ms (median)", "round, masked ms (critical path)",
                        "masked / plain", "plain ms (min)", "masked ms (min)", "masked / plain (min)",
                        "payload per hospital MiB, float32 plain", "uint64 masked"], round_rows),
    ])


def main(argv=None) -> None:
    args = parse_args(argv)
    rows = [bench_model(args, name.strip()) for name in args.models.split(",") if name.strip()]
    print(render(args, rows))
    save_json(args.json, {"setup": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
