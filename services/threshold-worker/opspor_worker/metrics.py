from prometheus_client import Counter, Histogram

PUPILS_EVALUATED = Counter("opspor_worker_pupils_evaluated_total", "Pupil evaluations")
CONCERNS_CHANGED = Counter("opspor_worker_concern_events_total", "Concern events emitted", ["type"])
TICK_SECONDS = Histogram("opspor_worker_tick_seconds", "Duration of a day-change tick")
