from prometheus_client import Gauge

# Set by every check of the clocks (cases.service.check_overdue); the operator's alert
# OpsporCasesOverdue (deploy/prometheus/rules.yml) sums it per municipality.
OVERDUE = Gauge(
    "opspor_cases_overdue",
    "Open cases that are overdue, by municipality and reason (as of the last check)",
    ["municipality", "reason"],
)
