from prometheus_client import Counter, Histogram

PUPILS_EVALUATED = Counter("opspor_worker_pupils_evaluated_total", "Pupil evaluations")
CONCERNS_CHANGED = Counter("opspor_worker_concern_events_total", "Concern events emitted", ["type"])
TICK_PUPILS = Counter(
    "opspor_worker_tick_pupils_evaluated_total",
    "Pupils evaluated by the day-change tick: scope=day when only the day moved on (pupils "
    "whose next change has come), scope=all when a calendar or pack changed",
    ["scope"],
)
TICK_SECONDS = Histogram("opspor_worker_tick_seconds", "Duration of a day-change tick")
