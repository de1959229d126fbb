"""Fleet-aware resilience: behaviour decided by every process of a service together.

* :class:`QuorumBreaker`: the fleet's circuit opens only when ``quorum`` distinct instances
  see their own circuit open; one sick instance only stops itself.
* :class:`FleetRetryBudget`: retries of the whole fleet limited to a fraction of its successes.

Each decision is one Lua script on Redis (``quorum.lua``, ``retry_budget.lua``); on a
:class:`~aioresil.MemoryBackend` the same rules run in-process.
"""

from ._common import instance_id
from .budget import FleetRetryBudget, FleetRetryBudgetStatistics
from .quorum import QuorumBreaker, QuorumConfig, QuorumReported, QuorumStats, QuorumTrip

__all__ = [
    "FleetRetryBudget",
    "FleetRetryBudgetStatistics",
    "QuorumBreaker",
    "QuorumConfig",
    "QuorumReported",
    "QuorumStats",
    "QuorumTrip",
    "instance_id",
]
