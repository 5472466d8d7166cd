"""What storing one classifier's files costs on S3 (moto on loopback), with and without latency.

    .venv/bin/python benchmarks/store_latency.py                 # delays 0 and 10 ms
    .venv/bin/python benchmarks/store_latency.py --delays 0 5 20 --repeats 30

Three ways of writing a classifier attempt's ``model.pkl`` (a fitted decision tree's pickle)
and ``metrics.parquet``, each the median of ``--repeats``:

* ``put, get, put``: the model, its read-back (the check before ETags), the metrics;
* ``put, put``: the two writes one after the other, no read-back;
* ``save_classifier_files``: what ATM does, the two writes concurrently, the model checked by
  its MD5 ETag.

A delay runs the requests through a proxy on loopback that holds every chunk it forwards for
that long in each direction: a stand-in for the round trips to a real object store, which the
loopback server does not have.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pickle
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from rich import box
from rich.console import Console
from rich.table import Table
from workers_throughput import free_port, start_moto


def start_proxy(target_port: int, delay: float) -> int:
    """A TCP proxy to ``target_port`` that delays each forwarded chunk; returns its port."""
    port = free_port()

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(1 << 16):
                await asyncio.sleep(delay)
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(forward(client_r, server_w), forward(server_r, client_w))

    started = threading.Event()

    async def serve() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        started.set()
        await server.serve_forever()

    threading.Thread(target=lambda: asyncio.run(serve()), daemon=True).start()
    started.wait(10)
    return port


def median_ms(call: Callable[[int], object], repeats: int) -> float:
    times = []
    for i in range(repeats):
        began = time.perf_counter()
        call(i)
        times.append(1000 * (time.perf_counter() - began))
    return statistics.median(times)


def measure(delay: float, moto_port: int, repeats: int) -> dict[str, float]:
    from s3fs import S3FileSystem
    from sklearn.tree import DecisionTreeClassifier

    from atm_core.artifacts import ArtifactStore, _parquet

    port = start_proxy(moto_port, delay) if delay else moto_port
    os.environ["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{port}"
    S3FileSystem.clear_instance_cache()  # a new client, for the new endpoint
    rng = np.random.default_rng(0)
    model = DecisionTreeClassifier(random_state=0).fit(
        rng.random((3000, 20)), rng.integers(2, size=3000)
    )
    blob = pickle.dumps(model)
    metrics = pd.DataFrame({"fold": range(6), "roc_auc": rng.random(6), "f1": rng.random(6)})
    store = ArtifactStore(f"s3://bench/delay-{delay}")
    fs, base = store.fs, store.root.removeprefix("s3://")
    store.save_classifier_files("warm-up", blob, metrics, None)  # the client's session

    def put_get_put(i: int) -> None:
        fs.pipe_file(f"{base}/a{i}/model.pkl", blob)
        fs.cat_file(f"{base}/a{i}/model.pkl")
        fs.pipe_file(f"{base}/a{i}/metrics.parquet", _parquet(metrics))

    def put_put(i: int) -> None:
        fs.pipe_file(f"{base}/b{i}/model.pkl", blob)
        fs.pipe_file(f"{base}/b{i}/metrics.parquet", _parquet(metrics))

    return {
        "put, get, put": median_ms(put_get_put, repeats),
        "put, put": median_ms(put_put, repeats),
        "save_classifier_files": median_ms(
            lambda i: store.save_classifier_files(f"c{i}", blob, metrics, None), repeats
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delays", type=float, nargs="+", default=[0, 10], help="ms per chunk")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory() as folder:
        moto, env = start_moto(Path(folder))
        os.environ.update(env)
        moto_port = int(env["AWS_ENDPOINT_URL"].rsplit(":", 1)[1])
        try:
            rows = {delay: measure(delay / 1000, moto_port, args.repeats) for delay in args.delays}
        finally:
            moto.terminate()
            moto.wait()
    table = Table(title="Storing one classifier's files on S3 (median ms)", box=box.MARKDOWN)
    table.add_column("proxy delay per chunk")
    for name in next(iter(rows.values())):
        table.add_column(name, justify="right")
    for delay, figures in rows.items():
        table.add_row(f"{delay:g} ms", *(f"{v:.1f}" for v in figures.values()))
    console.print(table)


if __name__ == "__main__":
    main()
