"""The prescription journey as data: which consumer reacts to which event.

    received ─ checks ─▶ approved / pharmacist_approved ─ billing ─▶ paid / nhs_funded
    ─ dispatch ─▶ acknowledged ─ gateway webhooks ─▶ dispensed ─▶ shipped ─▶ delivered

Compensations: cancelled or rejected_by_pharmacy → the payment is cancelled or refunded;
cancellation_refused (the gateway had already dispensed) → the staff queue. Every status
change also goes to the clinic's webhook, and the patient-facing ones to notifications.

The outbox relay (events.services) and the reconciler (saga.reconciler) read this table
through settings.EVENT_CONSUMERS. Each consumer is a task in saga/tasks.py; its name is a
stable identifier (ProcessedEvent rows, queue routes and published messages carry it), which
is why it names the app whose service it calls rather than the module that defines it.
This module is imported by the settings: plain data only.
"""

from __future__ import annotations

CHECK = "prescriptions.tasks.prescription_check"
REPEATS = "prescriptions.tasks.repeat_series_start"
BILL = "billing.tasks.billing_on_approved"
DISPATCH = "pharmacy.tasks.dispatch_on_approved"
COMPENSATE = "billing.tasks.payment_compensate"
STAFF_QUEUE = "billing.tasks.cancellation_request_on_refused"
NOTIFY = "notifications.tasks.notification_on_event"
CLINIC_WEBHOOK = "events.tasks.webhook_on_prescription_event"

EVENT_CONSUMERS: dict[str, tuple[str, ...]] = {
    "prescription.received": (CHECK, CLINIC_WEBHOOK),
    "prescription.awaiting_pharmacist": (CLINIC_WEBHOOK,),
    "prescription.rejected": (CLINIC_WEBHOOK,),
    "prescription.pharmacist_rejected": (CLINIC_WEBHOOK,),
    "prescription.approved": (BILL, REPEATS, CLINIC_WEBHOOK),
    "prescription.pharmacist_approved": (BILL, REPEATS, CLINIC_WEBHOOK),
    "prescription.awaiting_payment": (CLINIC_WEBHOOK,),
    "prescription.payment_failed": (NOTIFY, CLINIC_WEBHOOK),
    "prescription.payment_error": (NOTIFY,),
    "prescription.paid": (DISPATCH, CLINIC_WEBHOOK),
    "prescription.nhs_funded": (DISPATCH, CLINIC_WEBHOOK),
    "prescription.acknowledged": (NOTIFY, CLINIC_WEBHOOK),
    "prescription.dead_lettered": (CLINIC_WEBHOOK,),
    # Routing: a partner could not fill the order (the next one is tried), or none is eligible
    # and the prescription waits for staff.
    "prescription.partner_refused": (CLINIC_WEBHOOK,),
    "prescription.awaiting_partner": (CLINIC_WEBHOOK,),
    "prescription.dispensed": (CLINIC_WEBHOOK,),
    "prescription.shipped": (NOTIFY, CLINIC_WEBHOOK),
    "prescription.delivered": (NOTIFY, CLINIC_WEBHOOK),
    "prescription.cancelled": (COMPENSATE, NOTIFY, CLINIC_WEBHOOK),
    "prescription.rejected_by_pharmacy": (COMPENSATE, NOTIFY, CLINIC_WEBHOOK),
    "prescription.cancellation_refused": (STAFF_QUEUE,),
    "prescription.refunded": (NOTIFY,),
}

# Consumers a task runs itself, in the same process straight after its commit, for the events
# that commit wrote (events.services.event_consumers_run_here): the next step without a trip
# through the broker. Both share a queue group (deploy/compose.yaml); any other consumer of
# those events is published as usual.
RUN_HERE: dict[str, frozenset[str]] = {
    # Checks that approve outright: take the payment (or record NHS funding).
    CHECK: frozenset({BILL}),
}

# A consumer with nothing to do for an event is recorded as having handled it when the event is
# published (events.services.event_consumers_send), in the statement that finds out, instead of
# costing a task that would find out. Each condition is SQL over the event's row, `event`; it
# must only hold when the consumer's own run would do nothing.
CONSUMER_IDLE_WHEN: dict[str, str] = {
    # No active endpoint: nothing to POST (events.webhooks.webhook_deliveries_create).
    CLINIC_WEBHOOK: (
        "NOT EXISTS (SELECT 1 FROM events_clinicwebhookendpoint AS endpoint"
        " WHERE endpoint.clinic_id = event.clinic_id AND endpoint.is_active)"
    ),
    # Not an original with repeats: no series to start (prescriptions.repeats.repeat_series_start).
    REPEATS: (
        "NOT EXISTS (SELECT 1 FROM prescriptions_prescription AS prescription"
        " WHERE prescription.id = event.aggregate_id AND prescription.repeats > 0"
        " AND prescription.previous_id IS NULL)"
    ),
    # The patient has neither an email address nor a phone number: nobody to tell
    # (notifications.services.notification_send_for_event). Both are encrypted, and stay ''
    # when blank (patients.phi).
    NOTIFY: (
        "NOT EXISTS (SELECT 1 FROM prescriptions_prescription AS prescription"
        " JOIN patients_patient AS patient ON patient.id = prescription.patient_id"
        " WHERE prescription.id = event.aggregate_id AND (patient.email <> '' OR patient.phone <> ''))"
    ),
}
