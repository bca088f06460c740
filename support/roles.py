"""Staff roles: one auth Group each, with only the admin permissions that role needs.

Created (and re-synchronised) by support migration 0002. Per-clinic restrictions are
object permissions on top (support.services.staff_assign_clinic).

`patients.view_clinic` given to a role means "works for every clinic"; the support role
does not have it, so a support user sees only the clinics assigned to them.
"""

PHARMACIST = "pharmacist"
SUPPORT = "support"
OPERATOR = "operator"
FINANCE = "finance"
ADMIN = "admin"

_READ_CLINICAL = [
    "patients.view_patient",
    "patients.view_allergy",
    "patients.view_currentmedication",
    "prescriptions.view_prescription",
    "prescriptions.view_prescriptionitem",
    "prescriptions.view_pharmacistreview",
    "prescriptions.view_prescriber",
    "prescriptions.view_medication",
    "patients.view_diagnosis",
    "patients.view_observation",
]

ROLE_PERMISSIONS: dict[str, list[str]] = {
    # Clinical check queue: read the record, record a decision. Never edits the prescription.
    PHARMACIST: [
        *_READ_CLINICAL,
        "patients.view_clinic",
        "prescriptions.add_pharmacistreview",
        "prescriptions.view_pharmacistqueue",
        "prescriptions.view_repeatseries",
        "prescriptions.change_repeatseries",
        "events.view_event",
        # Enquiries support escalated (side effects): the patient page (after the caller's
        # identity check), notes and the resolution; never support's resends or cancellations.
        "support.view_enquiry",
        "support.change_enquiry",
        "support.view_enquirynote",
        "support.add_enquirynote",
        "support.use_patient_page",
    ],
    # Find a patient, read a prescription's timeline. Read only: no clinical field is editable.
    SUPPORT: [
        *_READ_CLINICAL,
        "events.view_event",
        "pharmacy.view_dispatch",
        "notifications.view_notification",
        "events.view_webhookdelivery",
        "prescriptions.view_repeatseries",
        # The support console: enquiries, the patient page and its actions (each with a reason).
        "support.view_enquiry",
        "support.add_enquiry",
        "support.change_enquiry",
        "support.view_enquirynote",
        "support.add_enquirynote",
        "support.view_supportaction",
        "support.use_patient_page",
        "support.resend_notification",
        "support.resend_webhook",
        "support.request_cancellation",
        "support.escalate_enquiry",
    ],
    # Dead letters, dispatches, the event log and outbox. No patient records.
    OPERATOR: [
        "patients.view_clinic",
        "patients.view_clinicclient",
        "prescriptions.view_prescription",
        "pharmacy.view_dispatch",
        "pharmacy.view_deadletter",
        "pharmacy.change_deadletter",
        "pharmacy.view_orderalert",
        "pharmacy.change_orderalert",
        "pharmacy.view_gatewaywebhookevent",
        "events.view_event",
        "events.view_outboxmessage",
        "events.view_processedevent",
        "events.view_clinicwebhookendpoint",
        "events.change_clinicwebhookendpoint",
        "events.view_webhookdelivery",
        "events.change_webhookdelivery",
        "events.view_webhookattempt",
        "pharmacy.view_gatewaycancellation",
        "notifications.view_notification",
        # The operator dashboard (support.dashboard) and the task statistics behind it.
        "support.view_dashboard",
        "support.view_taskstatistic",
    ],
    # Claims and reconciliation work on prescriptions and prices, never on patient records.
    FINANCE: [
        "patients.view_clinic",
        "prescriptions.view_prescription",
        "prescriptions.view_prescriptionitem",
        "billing.view_payment",
        "billing.change_payment",
        "billing.view_refund",
        "billing.change_refund",
        "billing.view_stripeevent",
        "billing.view_cancellationrequest",
        "billing.change_cancellationrequest",
        "billing.view_nhschargerate",
        "billing.add_nhschargerate",
        "billing.change_nhschargerate",
        "billing.view_nhscharge",
        "billing.view_claimbatch",
        "billing.add_claimbatch",
        "billing.change_claimbatch",
        "billing.view_claimitem",
        "prescriptions.view_medication",
    ],
    # Accounts, roles, clinics, API clients, 2FA devices, lockouts and the audit trail.
    # Clinical data stays read-only, and deciding on prescriptions stays with pharmacists.
    ADMIN: [
        *_READ_CLINICAL,
        "auth.view_user",
        "auth.add_user",
        "auth.change_user",
        "auth.view_group",
        "auth.view_permission",
        "prescriptions.view_pharmacistprofile",
        "prescriptions.add_pharmacistprofile",
        "prescriptions.change_pharmacistprofile",
        "patients.view_clinic",
        "patients.add_clinic",
        "patients.change_clinic",
        "patients.view_clinicclient",
        "patients.add_clinicclient",
        "patients.change_clinicclient",
        "oauth2_provider.view_application",
        "oauth2_provider.add_application",
        "oauth2_provider.change_application",
        "otp_totp.view_totpdevice",
        "otp_totp.add_totpdevice",
        "otp_totp.change_totpdevice",
        "otp_totp.delete_totpdevice",
        "axes.view_accessattempt",
        "axes.delete_accessattempt",
        "axes.view_accessfailurelog",
        "auditlog.view_logentry",
        "audit.view_patientaccess",
        "events.view_event",
        "support.view_supportaction",
        "support.view_dashboard",
    ],
}

# Every back-office view and action added beyond the stock admin pages, and the one permission
# it checks (support/views.py and the admin classes check exactly these). A role may use an
# action when its group holds the permission; support staff only for their assigned clinics.
ACTION_PERMISSIONS: dict[str, str] = {
    "index.my_work": "",  # every staff member; each panel line shows only with its own permission
    "dashboard.view": "support.view_dashboard",
    "dashboard.replay_dead_letter": "pharmacy.change_deadletter",
    "enquiry.list": "support.view_enquiry",
    "enquiry.open": "support.add_enquiry",
    "enquiry.assign": "support.change_enquiry",
    "enquiry.resolve": "support.change_enquiry",
    "enquiry.add_note": "support.add_enquirynote",
    "enquiry.escalate": "support.escalate_enquiry",
    "patient_page.find": "support.use_patient_page",
    "patient_page.identity_check": "support.use_patient_page",
    "patient_page.view": "support.use_patient_page",
    "patient_page.resend_notification": "support.resend_notification",
    "patient_page.resend_webhook": "support.resend_webhook",
    "patient_page.request_cancellation": "support.request_cancellation",
    "pharmacist.review": "prescriptions.add_pharmacistreview",
    "pharmacist.queue": "prescriptions.add_pharmacistreview",
}
