"""Shadow traffic: mirror answered requests to other versions, off the critical path.

Contract: `Mirror.on_response` / `Mirror.offer(...)` run after the client's answer is
ready; they are O(1) per lane (a random draw and `put_nowait` on a bounded queue)
and never block or raise. A full queue drops the work and counts it.

The pipeline, one module per stage:

* `task`: `MirrorTask` (one answered request) and the comparison names `SHADOW`,
  `NOISE`, `CANARY`;
* `lanes`: `Lane` (queue, `LaneStats`, `Breaker`) and `lanes_of(model config)`;
* `scheduler`: lane workers gather requests for `mirroring.linger_ms`, take up to
  `mirroring.bulk`, group those that can share a call, and only work in the event
  loop's spare time;
* `executor`: one group: resolve the other version through the `VersionTable`, run
  its own checks, one batched call with the lane's timeout (on that version's
  threads), feed the breaker, `compare_batch`;
* `outcomes`: one typed `Compared` / `Failed` per request, oriented once (`orient`:
  the canary lane's records put the rollout's primary first);
* `recorders`: the `Recorder` chain (canary gates, noise floor, lane stats, metrics,
  divergence log, capture); a new sink is one more object in `Mirror.recorders`;
* `service`: `Mirror`, which wires the stages together per config.

A `noise` lane replays a sample of requests to the primary itself: a deterministic
primary shows zero divergence; a non-deterministic one (dropout left on, stateful
ops) is reported once, and shadow divergence is judged against that noise floor.
A `canary` lane exists while a model has a rollout: requests the canary answered are
sent to the rollout's primary and compared the right way round.
"""

from gateway.serving.mirror.lanes import Breaker, Lane, LaneStats
from gateway.serving.mirror.outcomes import Compared, Failed, Outcome
from gateway.serving.mirror.recorders import Recorder, RecorderChain
from gateway.serving.mirror.service import Mirror
from gateway.serving.mirror.task import CANARY, NOISE, SHADOW, MirrorTask

__all__ = [
    "CANARY",
    "NOISE",
    "SHADOW",
    "Breaker",
    "Compared",
    "Failed",
    "Lane",
    "LaneStats",
    "Mirror",
    "MirrorTask",
    "Outcome",
    "Recorder",
    "RecorderChain",
]
