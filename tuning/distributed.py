"""Distributed tuning on KerasTuner's own chief/worker protocol.

`search(..., workers=K)` (CLI `--workers K`) makes the calling process the
chief: it serves the oracle over gRPC on 127.0.0.1 and starts K worker
processes, each with its own `KERASTUNER_TUNER_ID` (two workers sharing an
id would be handed the same trial), `KERASTUNER_ORACLE_IP` and
`KERASTUNER_ORACLE_PORT`.  The chief only serves the oracle; workers run
trials, each loading the data once.

What this adds to KerasTuner's `oracle_chief.start_server`:

* a worker that dies mid-trial (killed, or its gRPC call failed) does not
  stall the chief (upstream issue 915: its trial stays "ongoing" and the
  chief waits forever): its trial is put back in the retry queue and
  re-run from its last completed epoch by another worker, and a
  replacement worker is started;
* a port already taken is an error before anything starts, not a hang;
* the chief stops as soon as every worker has finished (no 20-second polls);
* workers die with the chief (Linux `PR_SET_PDEATHSIG`).

On a real cluster run the same `zoo tune` command on every machine with
`--role chief --oracle HOST:PORT` on one and `--role worker --oracle
HOST:PORT` on the others (distinct `KERASTUNER_TUNER_ID`s; the search
directory on a shared file system keeps the leaderboard complete).
"""

import os
import socket
import sys
import time

from tuning.errors import SearchError
from zoo import cluster

ENV_KEYS = ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT")


def parse_address(oracle):
    """(host, port) of the chief's "HOST:PORT"; None: 127.0.0.1 and port 0 (pick a free one)."""
    if oracle is None:
        return cluster.LOCALHOST, 0
    return cluster.split_address(oracle, what="oracle")


def check_port(host, port):
    """Refuse an oracle port another process is listening on (a clear error, not a hang)."""
    cluster.check_port_free(f"{host}:{port}", what="the oracle",
                            advice="pass another --oracle HOST:PORT")


def start_worker(directory, tuner_id, host, port, *, verbose=1, one_trial=False):
    """A worker process running `tuning.worker` on `directory` (it dies with the chief)."""
    env = dict(os.environ, KERASTUNER_TUNER_ID=tuner_id, KERASTUNER_ORACLE_IP=host,
               KERASTUNER_ORACLE_PORT=str(port), TF_CPP_MIN_LOG_LEVEL="3")
    env.setdefault("KERAS_BACKEND", "tensorflow")
    command = [sys.executable, "-m", "tuning.worker", directory, "--verbose", str(verbose)]
    if one_trial:
        command.append("--one-trial")
    return cluster.start_child(command, env=env)


def serve(oracle, host, port, *, threads=4):
    """Start the gRPC oracle server; returns (server, servicer)."""
    import grpc
    from concurrent import futures
    from keras_tuner.src import protos
    from keras_tuner.src.distribute.oracle_chief import OracleServicer

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads))
    servicer = OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:
        bound = 0
    if not bound:
        raise SearchError(f"The oracle port {host}:{port} is already in use; pass another "
                          f"--oracle HOST:PORT.")
    server.start()
    return server, servicer


def run_chief(prepared, *, workers, oracle=None, verbose=1, isolate=False):
    """Serve the oracle and run `workers` local worker processes until the search ends.

    Args:
        prepared: a `tuning.searcher.PreparedSearch`.
        workers: local worker processes (0: wait for remote ones, `--role chief`).
        oracle: "HOST:PORT" to serve on. Defaults to 127.0.0.1 and a free port.
        verbose: worker verbosity. Defaults to 1.
        isolate: every trial in a fresh worker process (one at a time). Defaults to False.

    Returns:
        The oracle's stop message (consecutive failures) or None.
    """
    from tuning import tuners

    host, port = parse_address(oracle)
    check_port(host, port)
    port = port or cluster.free_port(host)
    saved = {k: os.environ.get(k) for k in ENV_KEYS}
    os.environ.update(KERASTUNER_TUNER_ID="chief", KERASTUNER_ORACLE_IP=host,
                      KERASTUNER_ORACLE_PORT=str(port))
    pool = _WorkerPool(prepared.directory, host, port, verbose=verbose, one_trial=isolate)
    try:
        tuner = tuners.make_tuner(prepared, verbose=0)
        tuner.save()
        # Workers first: forking once gRPC's threads run is unsafe; they wait for the server.
        for _ in range(1 if isolate else workers):
            pool.start()
        server, servicer = serve(tuner.oracle, host, port)
        if verbose:
            print(f"chief: oracle on {host}:{port}; "
                  f"{'each trial in its own process' if isolate else f'{workers} workers'}",
                  flush=True)
        message = pool.supervise(tuner.oracle, servicer, workers=workers)
        server.stop(grace=1)
        tuner.oracle.save()
        tuners.cleanup_checkpoints(tuner.project_dir, tuner.oracle,
                                   keep=prepared.config["keep_checkpoints"])
        return tuner.oracle.zoo_stop_message or message
    finally:
        pool.stop_all()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class _WorkerPool:
    """The chief's local worker processes: started, watched, replaced, stopped."""

    def __init__(self, directory, host, port, *, verbose, one_trial):
        self.directory, self.host, self.port = directory, host, port
        self.verbose, self.one_trial = verbose, one_trial
        self.processes = {}
        self.started = 0

    def start(self):
        tuner_id = f"tuner{self.started}"
        self.started += 1
        self.processes[tuner_id] = start_worker(self.directory, tuner_id, self.host, self.port,
                                                verbose=self.verbose, one_trial=self.one_trial)

    def supervise(self, oracle, servicer, *, workers):
        """Wait until the search is over; returns a stop message if workers keep failing."""
        started_with = self.started
        crashes, message = 0, None
        while True:
            time.sleep(0.2)
            for tuner_id, process in list(self.processes.items()):
                code = process.poll()
                if code is None:
                    continue
                del self.processes[tuner_id]
                lost = oracle.release_tuner(tuner_id)
                crashes = crashes + 1 if code else 0
                if code and self.verbose:
                    print(f"chief: worker {tuner_id} exited with code {code}"
                          + (f"; trial {lost} goes back to the queue" if lost else ""),
                          flush=True)
                if crashes > max(2, workers):
                    message = (f"search stopped: worker processes keep failing (last exit code "
                               f"{code}); run one with `python -m tuning.worker "
                               f"{self.directory}` to see why")
                    continue
                finished = servicer.stop_triggered and not oracle.ongoing_trials and \
                    not oracle.has_pending()
                if (self.one_trial or code) and not finished and oracle.zoo_stop_message is None:
                    self.start()  # the next trial's process (isolate), or a replacement
            if message and not self.processes:
                return message
            if started_with and not self.processes:
                return None
            if not started_with and servicer.stop_triggered and not oracle.ongoing_trials \
                    and not oracle.tuner_ids:
                return None

    def stop_all(self):
        cluster.stop_all(self.processes.values(), timeout=10.0)


def run_worker(prepared, *, oracle=None, tuner_id=None, verbose=1, one_trial=False):
    """Run trials for the chief until it has no more (the one worker entry).

    Args:
        prepared: a `tuning.searcher.PreparedSearch`.
        oracle: the chief's "HOST:PORT". Defaults to the KERASTUNER_ORACLE_IP
            and KERASTUNER_ORACLE_PORT the chief gave a local worker.
        tuner_id: this worker's id. Defaults to KERASTUNER_TUNER_ID, else one
            made of the host name and process id.
        verbose: 0 silent, 1 a line per trial. Defaults to 1.
        one_trial: return after one trial (`isolate`). Defaults to False.
    """
    from tuning import tuners

    tuner_id = tuner_id or os.environ.get("KERASTUNER_TUNER_ID") or \
        f"worker-{socket.gethostname()}-{os.getpid()}"
    if "chief" in tuner_id:
        raise SearchError(f"A worker's tuner id may not contain 'chief'. Received: {tuner_id!r}")
    os.environ["KERASTUNER_TUNER_ID"] = tuner_id
    if oracle is not None:
        host, port = parse_address(oracle)
        os.environ.update(KERASTUNER_ORACLE_IP=host, KERASTUNER_ORACLE_PORT=str(port))
    tuners.run_trials(tuners.make_tuner(prepared, verbose=verbose, worker=True,
                                        one_trial=one_trial))
    return 0
