"""Benchmark of the batch job (`advocacy score`) at 100k and 1M customers.

Prints, in one run:
- raw `Booster.predict` rows/s on the job's own features, in memory (the propensity model alone, and
  both models as the job needs them: propensity plus acceptance for each of the 9 ask types);
- end-to-end job rows/s without and with reasons, and the peak RSS of the job (its whole process tree),
  each job in a child process;
- with `--reasons-study`, reasons at scale: exact TreeSHAP, `PatternTreeShap`, SHAP's approximate
  (Saabas) attributions, and how often each one's top-3 reasons equal exact TreeSHAP's;
- a per-stage profile of one chunk, to show where the time goes;
- per size, the job against a floor that also counts the point-in-time features (the engine's one
  pass over the whole base, tables in memory): work the job cannot avoid, which the issue's floor omits;
- last, per size, the job against its floor measured in the same run (reading every raw table the
  job reads with pyarrow, plus both models' predict on the job's features in memory):
  `1M: job without reasons X s, with reasons Y s; floor Z s (read A s + predict B s); ratio ...`

Worlds are generated into benchmarks/out/ (git-ignored) with `advocacy generate`; `--tile` builds the
1M world by tiling the 100k one with renamed ids instead (minutes instead of about half an hour).
The model is a champion trained on data/sample into benchmarks/out/home.

    .venv/bin/python benchmarks/batch.py [--sizes 100k,1m] [--engines local,dask] [--tile] [--workers N]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OUT = ROOT / "benchmarks" / "out"
HOME = OUT / "home"
AS_OF = "2026-11-01"
SIZES = {"100k": 100_000, "1m": 1_000_000}
THREADS = 2


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def advocacy(*args: str) -> list[str]:
    return [sys.executable, "-m", "advocacy", *args]


def job_env() -> dict[str, str]:
    return {**os.environ, "ADVOCACY_HOME": str(HOME), "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


def ensure_champion() -> None:
    from models.registry import ChampionUnavailableError, resolve_champion
    from storage.settings import Settings

    settings = Settings(home=HOME, data_dir=ROOT / "data" / "sample")
    try:
        resolve_champion(settings)
        return
    except ChampionUnavailableError:
        pass
    log("training a champion on data/sample into benchmarks/out/home")
    from training.pipeline import train

    result = train(settings)
    assert result.promoted, result.gate.reason


def ensure_world(size: str, tile: bool) -> tuple[Path, str]:
    """The world's folder and how it was made."""
    folder = OUT / f"world-{size}"
    if (folder / "customers.parquet").exists():
        return folder, "generated" if not (folder / "TILED").exists() else "tiled from world-100k"
    n = SIZES[size]
    if size == "1m" and tile:
        base, _ = ensure_world("100k", tile)
        log("tiling world-100k 10 times into world-1m (ids renamed)")
        tile_world(base, folder, 10)
        (folder / "TILED").write_text("10 copies of world-100k with renamed ids\n")
        return folder, "tiled from world-100k"
    log(f"generating {n:,} customers x 30 months into {folder}")
    seed = {"100k": "1", "1m": "2"}[size]
    subprocess.run(advocacy("generate", "--out", str(folder), "--customers", str(n), "--seed", seed), check=True)
    return folder, "generated"


def tile_world(base: Path, target: Path, copies: int) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    target.mkdir(parents=True, exist_ok=True)
    ids = {"customer_id", "ask_id", "activity_id", "opportunity_id", "referred_by"}
    for path in sorted(base.glob("*.parquet")):
        table = pq.read_table(path)
        with pq.ParquetWriter(target / path.name, table.schema) as writer:
            for k in range(copies):
                piece = table
                for name in ids & set(table.column_names):
                    column = table.column(name)
                    renamed = pc.if_else(
                        pc.is_null(column),
                        column,
                        pc.binary_join_element_wise(
                            column, pa.scalar(f"-{k}", column.type), pa.scalar("", column.type)
                        ),
                    )
                    piece = piece.set_column(piece.column_names.index(name), name, renamed.cast(column.type))
                writer.write_table(piece.cast(table.schema))
                del piece


@dataclass
class JobRun:
    rows: int
    seconds: float
    peak_rss_mb: float
    load: float  # mean 1-minute load average during the run: other work on the machine slows the job
    stages: str = ""  # the job's own "Seconds per stage" line

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds


def run_job(world: Path, out: Path, store: Path, explain: bool, engine: str, workers: int | None) -> JobRun:
    """`advocacy score` in a child process; peak RSS summed over its process tree (Dask workers too)."""
    shutil.rmtree(store, ignore_errors=True)
    out.unlink(missing_ok=True)
    args = advocacy("score", "--data", str(world), "--out", str(out), "--as-of", AS_OF, "--engine", engine)
    args.append("--explain" if explain else "--no-explain")
    if workers is not None and engine == "local":
        args += ["--workers", str(workers)]
    env = {**job_env(), "ADVOCACY_FEATURE_STORE": str(store), "COLUMNS": "120"}
    logfile = out.with_suffix(".log")
    started = time.perf_counter()
    with open(logfile, "w") as fh:
        proc = subprocess.Popen(args, env=env, stdout=fh, stderr=subprocess.STDOUT)
        peak = [0]
        loads: list[float] = []
        stop = threading.Event()

        def sample() -> None:
            try:
                root = psutil.Process(proc.pid)
                while not stop.is_set():
                    try:
                        rss = sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
                        peak[0] = max(peak[0], rss)
                        loads.append(os.getloadavg()[0])
                    except psutil.Error:
                        pass
                    time.sleep(0.1)
            except psutil.Error:
                pass

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code = proc.wait()
        stop.set()
        sampler.join()
    seconds = time.perf_counter() - started
    if code != 0:
        raise RuntimeError(f"job failed ({code}): see {logfile}")
    rows = int(pd.read_parquet(out, columns=["customer_id"]).shape[0])
    text = " ".join(logfile.read_text().split())  # the console wraps long lines
    found = re.search(r"Seconds per stage: (.*?)(?= Wrote )", text)
    stages = found.group(1) if found else ""
    return JobRun(rows, seconds, peak[0] / 2**20, float(np.mean(loads)) if loads else float("nan"), stages)


def snapshot_features(store: Path) -> pd.DataFrame:
    from storage.snapshots import read_snapshot

    return read_snapshot(store)[0]["features"]


def best_of(fn: Callable[[], object], repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def raw_predict(bundle: Any, matrix: np.ndarray) -> dict[str, float]:
    """Rows/s of `Booster.predict` on features in memory, 2 threads."""
    from models.bundle import acceptance_matrix

    b = bundle
    n = len(matrix)
    propensity = best_of(lambda: b.propensity.booster.predict(matrix, raw_score=True, num_threads=THREADS))
    ask_rows = acceptance_matrix(matrix)
    acceptance = best_of(lambda: b.acceptance.booster.predict(ask_rows, raw_score=True, num_threads=THREADS), 1)
    return {"propensity": n / propensity, "both": n / (propensity + acceptance)}


@dataclass
class Floor:
    """What the job cannot avoid, measured on this machine in this run: reading every raw table it
    reads with pyarrow, and both models' predict on its own features in memory. `features` is the
    point-in-time engine's one pass over the whole base, on tables already read and checked: work the
    job cannot avoid either, which the issue's floor leaves out."""

    read: float
    predict: float
    features: float = float("nan")

    @property
    def seconds(self) -> float:
        return self.read + self.predict

    @property
    def with_features(self) -> float:
        return self.read + self.features + self.predict


def measure_floor(world: Path, bundle: Any, matrix: np.ndarray) -> Floor:
    """Best of 3 for each part. Predict: propensity on every row, acceptance on every row x ask type,
    with as many LightGBM threads in all as the job uses (its processes x their threads = the cores)."""
    import pyarrow.parquet as pq

    from features.io import table_files
    from models.bundle import acceptance_matrix

    files = list(table_files(world).values())
    read = best_of(lambda: [pq.read_table(path) for path in files])
    ask_rows = acceptance_matrix(matrix)
    threads = os.cpu_count() or 1

    def predict() -> None:
        bundle.propensity.booster.predict(matrix, raw_score=True, num_threads=threads)
        bundle.acceptance.booster.predict(ask_rows, raw_score=True, num_threads=threads)

    return Floor(read, best_of(predict), whole_base_features(world, bundle))


def whole_base_features(world: Path, bundle: Any) -> float:
    """Seconds of `build_features` for every active customer at once (one as_of, one pass per table),
    the tables read and checked beforehand (not timed), with every core: best of 2."""
    from features.io import read_world
    from features.pointintime import active_points, build_features

    tables = read_world(world)
    as_of = pd.Timestamp(AS_OF, tz="UTC")
    threads = os.cpu_count() or 1
    points = active_points(tables, as_of)
    return best_of(lambda: build_features(tables, points, bundle.lapse_days, threads, commitments=True), 2)


def summary_line(size: str, no: JobRun, yes: JobRun, floor: Floor) -> str:
    """The issue's one-line form, from one run."""
    z = floor.seconds
    return (
        f"{size.upper() if size == '1m' else size}: job without reasons {no.seconds:.1f} s, with reasons "
        f"{yes.seconds:.1f} s; floor {z:.1f} s (read {floor.read:.1f} s + predict {floor.predict:.1f} s); "
        f"ratio without {no.seconds:.1f}/{z:.1f} = {no.seconds / z:.2f}, ratio with {yes.seconds:.1f}/{z:.1f} = "
        f"{yes.seconds / z:.2f}; peak RSS {max(no.peak_rss_mb, yes.peak_rss_mb):,.0f} MB"
    )


def features_line(size: str, no: JobRun, yes: JobRun, floor: Floor) -> str:
    """The same run against a floor that counts the point-in-time features too."""
    w = floor.with_features
    return (
        f"{size.upper() if size == '1m' else size}, counting the features: floor {w:.1f} s (read {floor.read:.1f} s + "
        f"features {floor.features:.1f} s + predict {floor.predict:.1f} s); ratio without {no.seconds:.1f}/{w:.1f} = "
        f"{no.seconds / w:.2f}, ratio with {yes.seconds:.1f}/{w:.1f} = {yes.seconds / w:.2f}"
    )


def top3_agreement(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Share of rows with the same top-3 reasons in the same order, and as a set."""
    from models.reasons import top_indices

    ta, tb = top_indices(a[:, :-1], 3), top_indices(b[:, :-1], 3)
    ordered = float(np.mean(np.all(ta == tb, axis=1)))
    as_set = float(np.mean([set(x) == set(y) for x, y in zip(ta.tolist(), tb.tolist(), strict=True)]))
    return ordered, as_set


def saabas(booster: Any, matrix: np.ndarray) -> np.ndarray:
    """Saabas (path) attributions: each split credits its feature with the change in node value."""
    model = booster.dump_model()
    leaves = np.asarray(booster.predict(matrix, pred_leaf=True, num_threads=THREADS), dtype=np.int64).reshape(
        len(matrix), -1
    )
    width = booster.num_feature() + 1
    out = np.zeros((len(matrix), width))
    for t, info in enumerate(model["tree_info"]):
        table = np.zeros((info["num_leaves"], width))
        root = info["tree_structure"]
        start = np.zeros(width)
        start[-1] = root.get("internal_value", root.get("leaf_value", 0.0))
        stack = [(root, start)]
        while stack:
            node, acc = stack.pop()
            if "leaf_index" in node:
                table[node["leaf_index"]] = acc
                continue
            for child in (node["left_child"], node["right_child"]):
                value = child["leaf_value"] if "leaf_index" in child else child["internal_value"]
                step = acc.copy()
                step[node["split_feature"]] += value - node["internal_value"]
                stack.append((child, step))
        out += table[leaves[:, t]]
    return out


def explain_comparison(bundle: Any, matrix: np.ndarray, chunk: int = 20_000) -> list[tuple[str, float, str]]:
    """Rows/s of each way to get top-3 reasons, and agreement with exact TreeSHAP."""
    from models.explain_fast import PatternTreeShap

    booster = bundle.propensity.booster
    rows = []
    t = time.perf_counter()
    exact = np.asarray(booster.predict(matrix, pred_contrib=True, num_threads=THREADS))
    rows.append(("exact TreeSHAP (LightGBM pred_contrib, 2 threads)", len(matrix) / (time.perf_counter() - t), "100%"))

    explainer = PatternTreeShap(booster)
    t = time.perf_counter()
    parts, recomputed, patterns, computed = [], 0, 0, 0
    for lo in range(0, len(matrix), chunk):
        values, stats = explainer.contributions(matrix[lo : lo + chunk])
        parts.append(values)
        recomputed += stats.exact_rows
        patterns += stats.patterns
        computed += stats.computed
    fast = np.concatenate(parts)
    seconds = time.perf_counter() - t
    ordered, _ = top3_agreement(fast, exact)
    rows.append(
        (
            f"PatternTreeShap, 1 thread, chunks of {chunk:,} ({computed:,} of {patterns:,} tree patterns explained, "
            f"{recomputed} near-tie rows recomputed exactly; max |diff| {np.max(np.abs(fast - exact)):.1e})",
            len(matrix) / seconds,
            f"{ordered:.4%} (top-3, in order)",
        )
    )

    # shap 0.51 refuses approximate=True for LightGBM, so Saabas attributions are computed here from
    # LightGBM's own leaf indices: in a tree they depend only on the leaf reached.
    t = time.perf_counter()
    approx = saabas(booster, matrix)
    seconds = time.perf_counter() - t
    ordered, as_set = top3_agreement(approx, exact)
    rows.append(
        (
            "Saabas (path attributions, LightGBM pred_leaf)",
            len(matrix) / seconds,
            f"{ordered:.1%} in order, {as_set:.1%} as a set",
        )
    )

    unique_rows = len(np.unique(matrix.round(12), axis=0))
    rows.append(
        ("dedupe identical rows (not used)", float("nan"), f"{unique_rows / len(matrix):.1%} of rows are distinct")
    )
    return rows


def profile_chunk(work: Path, chunk: int, bundle: Any, scorer: Any) -> tuple[dict[str, float], int]:
    """Seconds per stage of `batch.chunk.score_chunk`, done step by step."""
    import batch
    from batch.job import Stages
    from usecases import score_world

    as_of = pd.Timestamp(AS_OF, tz="UTC")
    clock = Stages()
    world = batch.load_chunk_world(work, chunk)
    clock.lap("load chunk")
    scored = score_world(bundle, world, as_of, num_threads=THREADS, on_stage=clock.lap)
    scores, matrix = scored.scores, scored.matrix
    bundle.propensity.proba(matrix, THREADS)
    clock.lap("  (for scale: propensity predict alone)")
    scores.contributions, _ = scorer.explainer.contributions(matrix)
    clock.lap("reasons: PatternTreeShap")
    bundle.propensity.booster.predict(matrix, pred_contrib=True, num_threads=THREADS)
    clock.lap("  (for scale: exact TreeSHAP instead)")
    result = scores.columns()
    clock.lap("Scores.columns(): per-row reason and disagreement text")
    batch.result_table(result)
    clock.lap("to Arrow")
    return clock.seconds, len(result)


def stage_profile(world: Path, bundle: Any) -> list[tuple[str, float]]:
    """Seconds per stage for one chunk of the job's default size, explainer cache warm."""
    import batch

    work = OUT / "profile-work"
    shutil.rmtree(work, ignore_errors=True)
    files = batch.table_files(world)
    started = time.perf_counter()
    split = batch.split_tables(files, work, batch.DEFAULT_CHUNK_SIZE)
    per_chunk = (time.perf_counter() - started) / split.n_chunks
    scorer = batch.Scorer.for_bundle(bundle, explain=True)
    profile_chunk(work, 0, bundle, scorer)  # warms the explainer's cache, as earlier chunks do in a run
    stages, rows = profile_chunk(work, 1, bundle, scorer)
    shutil.rmtree(work, ignore_errors=True)
    return [("split and validate (per chunk)", per_chunk), *stages.items(), ("rows in chunk", float(rows))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100k,1m")
    parser.add_argument("--engines", default="local", help="comma-separated: local, dask")
    parser.add_argument("--tile", action="store_true", help="build the 1M world by tiling the 100k one")
    parser.add_argument("--workers", type=int, help="the local engine's processes (default: the job's own choice)")
    parser.add_argument(
        "--reasons-study", action="store_true", help="also compare exact TreeSHAP, PatternTreeShap and Saabas"
    )
    args = parser.parse_args()
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    OUT.mkdir(parents=True, exist_ok=True)
    ensure_champion()

    import batch
    from models.registry import load_champion
    from storage.settings import Settings

    settings = Settings(home=HOME)
    _, bundle = load_champion(settings)
    booster = bundle.propensity.booster
    log(
        f"model v{bundle.model_version}: propensity {booster.num_trees()} trees, acceptance "
        f"{bundle.acceptance.booster.num_trees()} trees; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}"
    )
    report: list[str] = []
    floors: dict[str, Floor] = {}
    lines: dict[tuple[str, str], str] = {}
    counted: dict[tuple[str, str], str] = {}
    for size in sizes:
        world, made = ensure_world(size, args.tile)
        for engine in engines:
            runs = {}
            for explain in (False, True):
                label = "with reasons" if explain else "without reasons"
                log(f"{size}: job {label}, {engine} engine")
                store = OUT / f"store-{size}"
                runs[explain] = run_job(
                    world, OUT / f"scores-{size}-{engine}-{int(explain)}.parquet", store, explain, engine, args.workers
                )
                r = runs[explain]
                log(f"  {r.rows:,} rows in {r.seconds:,.1f} s = {r.rows_per_second:,.0f} rows/s (load {r.load:.1f})")
                log(f"  the job's seconds per stage (after the process's start-up): {r.stages}")
            features = snapshot_features(OUT / f"store-{size}")
            matrix = bundle.encoder.transform(features)
            log(f"{size}: the floor (read every raw table, predict both models in memory)")
            floors[size] = measure_floor(world, bundle, matrix)
            lines[(size, engine)] = summary_line(size, runs[False], runs[True], floors[size])
            counted[(size, engine)] = features_line(size, runs[False], runs[True], floors[size])
            if engine != "local":
                lines[(size, engine)] += f" ({engine} engine)"
                counted[(size, engine)] += f" ({engine} engine)"
            raw = raw_predict(bundle, matrix)
            no, yes = runs[False], runs[True]
            customers = len(pd.read_parquet(world / "customers.parquet", columns=["customer_id"]))
            workers = args.workers or batch.default_workers(customers)
            where = f"{engine} engine"
            if engine == "local":
                where += f", {workers} process(es) scoring (the job's own and {workers - 1} started)"
            report += [
                f"== {size} customers ({made} world), {no.rows:,} active, {where}, {THREADS} cores",
                f"raw Booster.predict, features in memory: propensity {raw['propensity']:,.0f} rows/s; "
                f"both models as the job needs them (1 + 9 ask types) {raw['both']:,.0f} rows/s",
                f"job without reasons: {no.rows_per_second:,.0f} rows/s ({no.seconds:,.1f} s), "
                f"{no.rows_per_second / raw['propensity']:.1%} of raw propensity predict, "
                f"{no.rows_per_second / raw['both']:.1%} of both-model predict; peak RSS {no.peak_rss_mb:,.0f} MB; "
                f"load average {no.load:.1f}",
                f"job with top-3 reasons: {yes.rows_per_second:,.0f} rows/s ({yes.seconds:,.1f} s = "
                f"{yes.seconds / 60:.1f} min); peak RSS {yes.peak_rss_mb:,.0f} MB; load average {yes.load:.1f}",
                f"job stages, without reasons: {no.stages}; with: {yes.stages}",
            ]
            print("\n".join(report[-5:]), flush=True)
            if size == sizes[0] and engine == engines[0] and args.reasons_study:
                log("reasons: exact vs fast vs approximate")
                report.append(f"-- reasons on the {len(matrix):,} rows of {size}")
                for name, rate, agreement in explain_comparison(bundle, matrix):
                    if rate != rate:  # no speed to show: the dedupe line
                        report.append(f"   {name}: {agreement}")
                    else:
                        report.append(f"   {name}: {rate:,.0f} rows/s, top-3 agreement with exact: {agreement}")
                print("\n".join(report[-5:]), flush=True)
            if size == sizes[0] and engine == engines[0]:
                log("per-stage profile of one chunk")
                report.append(f"-- one chunk of {size}, seconds per stage (steady state, {THREADS} LightGBM threads)")
                for name, seconds in stage_profile(world, bundle):
                    report.append(
                        f"   {name}: {seconds:,.2f}" if name != "rows in chunk" else f"   {name}: {seconds:,.0f}"
                    )
                print("\n".join(report[-12:]), flush=True)
    print("\n" + "=" * 100)
    print("\n".join(report))
    # The floor that counts the features, then last, the one line per size (the largest
    # last), each from this run's job and floor.
    for key in sorted(counted, key=lambda k: SIZES[k[0]]):
        print(counted[key])
    for key in sorted(lines, key=lambda k: SIZES[k[0]]):
        print(lines[key])


if __name__ == "__main__":
    main()
