"""Micro-batching: concurrent requests to one model share one forward pass.

Each model has a queue and one worker task. The worker takes the first waiting request, gathers more for
up to ``batch_wait_ms`` (until ``max_batch`` inputs), and runs them as one ``predict_examples`` call in a
thread. There is one call at a time per model, so the tokenizer and the model are never used by two
threads at once, and the event loop stays free to accept requests meanwhile. Each request's future gets
its own slice of the predictions, in order. With micro-batching off the worker takes one request at a time.

No request can change another's answer: each input is encoded as what it is (a single text beside a
pair, any length: padding is masked), and when a merged batch fails for any reason (the long-input check's
encoding, the forward pass, decoding, a wrong number of predictions), each request is run again alone, so
only the request at fault gets the error; no error ever leaves a request waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

from taskhead.errors import DataError
from taskhead.serving.settings import ServeSettings


@dataclass
class Job:
    """One request's inputs on their way through the queue."""

    examples: list[dict[str, Any]]
    truncated: list[bool]  # per input: cut to max_text_chars already, or truncated by the model
    future: asyncio.Future[list[dict[str, Any]]]
    predictions: list[dict[str, Any]] | None = None
    error: BaseException | None = None


@dataclass
class BatchStats:
    """Counters shown by ``GET /health``: requests answered, forward passes run, inputs predicted."""

    requests: int = 0
    batches: int = 0
    inputs: int = 0
    largest_batch: int = 0

    def as_dict(self) -> dict[str, Any]:
        mean = self.inputs / self.batches if self.batches else 0.0
        return {**self.__dict__, "mean_batch": round(mean, 2)}


@dataclass
class MicroBatcher:
    """The queue and worker of one model. ``submit`` from request handlers; ``close`` at shutdown."""

    predictor: Any
    settings: ServeSettings
    stats: BatchStats = field(default_factory=BatchStats)
    _queue: asyncio.Queue[Job] | None = None
    _worker_task: asyncio.Task[None] | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _held: Job | None = None  # a request that did not fit in the previous batch: first of the next one

    async def submit(self, examples: list[dict[str, Any]], truncated: list[bool]) -> list[dict[str, Any]]:
        """Queue one request's examples and wait for their predictions (``"truncated": true`` flagged)."""
        queue = self._ensure_worker()
        job = Job(examples, truncated, asyncio.get_running_loop().create_future())
        await queue.put(job)
        return await job.future

    async def close(self) -> None:
        if self._worker_task is not None:
            self._worker_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker_task
            self._worker_task = None

    def _ensure_worker(self) -> asyncio.Queue[Job]:
        """The queue of the running loop's worker; started on first use, so the app also works without its
        lifespan having run (httpx's ASGITransport)."""
        loop = asyncio.get_running_loop()
        if (
            self._queue is None
            or self._worker_task is None
            or self._worker_task.done()
            or self._loop is not loop
        ):
            self._loop, self._queue, self._held = loop, asyncio.Queue(), None
            self._worker_task = loop.create_task(self._worker(self._queue))
        return self._queue

    async def _worker(self, queue: asyncio.Queue[Job]) -> None:
        while True:
            jobs = await self._collect(queue)
            try:
                await self._run_apart(jobs)
            finally:  # even when cancelled: no request waits for ever
                self._answer(jobs)

    async def _run_apart(self, jobs: list[Job]) -> None:
        """``_run`` in a thread; if it fails as a whole, each request again alone, so a failure anywhere
        (not only in the forward pass) reaches only the request at fault (a 500 for a model failure)."""
        try:
            await asyncio.to_thread(self._run, jobs)
        except Exception as exc:
            if len(jobs) == 1:
                jobs[0].predictions, jobs[0].error = None, exc
                return
            for job in jobs:
                job.predictions, job.error = None, None
                await self._run_apart([job])

    async def _collect(self, queue: asyncio.Queue[Job]) -> list[Job]:
        """The next batch: the first waiting request and those that join it within ``batch_wait_ms``."""
        loop = asyncio.get_running_loop()
        jobs: list[Job] = []
        size = 0
        deadline = None
        while True:
            if self._held is not None:
                job, self._held = self._held, None
            elif not jobs:
                job = await queue.get()
                deadline = loop.time() + self.settings.batch_wait_ms / 1000
            elif not self.settings.micro_batching or size >= self.settings.max_batch:
                break
            elif not queue.empty():
                job = queue.get_nowait()
            else:
                remaining = (deadline or 0.0) - loop.time()
                if remaining <= 0:
                    break
                try:
                    job = await asyncio.wait_for(queue.get(), remaining)
                except TimeoutError:
                    break
            if job.future.done():  # the client went away
                continue
            if jobs and size + len(job.examples) > self.settings.max_batch:
                self._held = job
                break
            jobs.append(job)
            size += len(job.examples)
            if deadline is None:
                deadline = loop.time() + self.settings.batch_wait_ms / 1000
        return jobs

    def _run(self, jobs: list[Job]) -> None:
        """In the worker thread: long-input checks per request, then one forward pass for all of them."""
        ready = []
        for job in jobs:
            try:
                self._check_long(job)
            except Exception as exc:  # the request's own error (its encoding failed), not its batch mates'
                job.error = exc
                continue
            ready.append(job)
        if not ready:
            return
        examples = [ex for job in ready for ex in job.examples]
        try:
            predictions = self._predict(examples)
        except Exception as exc:  # any failure goes to the request(s) at fault
            if len(ready) == 1:
                ready[0].error = exc
                return
            # find the request at fault (bad input: 422, or an input the model fails on: 500); the others
            # still get their answers: no request changes another's answer, not even into an error
            for job in ready:
                try:
                    job.predictions = self._predict(job.examples)
                except Exception as one:  # answered as this request's own error
                    job.error = one
            return
        self.stats.batches += 1
        self.stats.inputs += len(examples)
        self.stats.largest_batch = max(self.stats.largest_batch, len(examples))
        start = 0
        for job in ready:
            job.predictions = predictions[start : start + len(job.examples)]
            start += len(job.examples)

    def _predict(self, examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
        predictions = list(self.predictor.predict_examples(examples))
        if len(predictions) != len(examples):
            raise RuntimeError(f"{len(predictions)} predictions for {len(examples)} inputs")
        return predictions

    def _check_long(self, job: Job) -> None:
        """Flag (truncate) or refuse (reject) the inputs the model would truncate to its max_length."""
        task, tokenizer, model = self.predictor.task, self.predictor.tokenizer, self.predictor.config.model
        if not job.examples or not task.encode(job.examples, tokenizer, model).truncated:
            return
        for i, ex in enumerate(job.examples):
            if task.encode([ex], tokenizer, model).truncated:
                if self.settings.on_long == "reject":
                    raise DataError(
                        [
                            f"{ex.get('_where', f'inputs[{i}]')}: the model would truncate this input to fit "
                            f"model.max_length={model.max_length} tokens; the server rejects long inputs "
                            f"(--on-long reject)"
                        ]
                    )
                job.truncated[i] = True

    def _answer(self, jobs: list[Job]) -> None:
        for job in jobs:
            if job.future.done():
                continue
            if job.predictions is None:
                job.future.set_exception(job.error or RuntimeError("the batch ended without predictions"))
                continue
            try:
                answer = [
                    dict(p, truncated=True) if cut else p
                    for p, cut in zip(job.predictions, job.truncated, strict=True)
                ]
            except Exception as exc:  # a malformed prediction fails its own request only
                job.future.set_exception(exc)
                continue
            self.stats.requests += 1
            job.future.set_result(answer)
