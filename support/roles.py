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
        # Cancelling with compensation is a clinical decision, from a prescription or from a
        # dispatch that ran out of attempts.
        "prescriptions.cancel_prescription",
        "pharmacy.view_deadletter",
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
        # Pharmacy partners and their stock feeds; dispatches waiting for a partner are routed
        # again from the dispatch list (change_dispatch).
        "pharmacy.view_partner",
        "pharmacy.add_partner",
        "pharmacy.change_partner",
        "pharmacy.view_partnerstock",
        "pharmacy.view_stockfeedevent",
        "pharmacy.change_dispatch",
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
    # Superuser status, single permissions and the pharmacist and admin roles (and a
    # pharmacist's registration) are granted by a superuser only (GRANTABLE_BY_ADMIN).
    ADMIN: [
        *_READ_CLINICAL,
        "auth.view_user",
        "auth.add_user",
        "auth.change_user",
        "auth.view_group",
        "auth.view_permission",
        "prescriptions.view_pharmacistprofile",
        "patients.view_clinic",
        "patients.add_clinic",
        "patients.change_clinic",
        "patients.view_clinicclient",
        "patients.add_clinicclient",
        "patients.change_clinicclient",
        "oauth2_provider.view_application",
        "oauth2_provider.add_application",
        "oauth2_provider.change_application",
        # A lost phone: delete the device; enrolment is manage.py staff_totp_enrol.
        "otp_totp.view_totpdevice",
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

# The roles a non-superuser with auth.change_user may hand out (support.services).
GRANTABLE_BY_ADMIN = (SUPPORT, OPERATOR, FINANCE)

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

# --- The role × action matrix (the README shows it; tests/support/test_role_matrix.py holds the
# admin to it): what each role may do in the back office. A superuser may do everything else,
# but for deciding on a prescription (a registered pharmacist only) and seeing a TOTP key (nobody).

# Each registered admin: the views each role may open, v(iew: the list and each page), a(dd),
# c(hange), d(elete). A model nobody is listed for is for superusers only.
ADMIN_MODELS: dict[str, dict[str, str]] = {
    "audit.patientaccess": {ADMIN: "v"},
    "auditlog.logentry": {ADMIN: "v"},
    "auth.group": {ADMIN: "v"},
    "auth.user": {ADMIN: "vac"},
    "axes.accessattempt": {ADMIN: "vd"},
    "axes.accessfailurelog": {ADMIN: "v"},
    "axes.accesslog": {},
    "billing.cancellationrequest": {FINANCE: "vc"},
    "billing.claimbatch": {FINANCE: "vc"},
    "billing.nhscharge": {FINANCE: "v"},
    "billing.nhschargerate": {FINANCE: "vac"},
    "billing.payment": {FINANCE: "vc"},
    "billing.refund": {FINANCE: "vc"},
    "billing.stripeevent": {FINANCE: "v"},
    "django_celery_beat.clockedschedule": {},
    "django_celery_beat.crontabschedule": {},
    "django_celery_beat.intervalschedule": {},
    "django_celery_beat.periodictask": {},
    "django_celery_beat.solarschedule": {},
    "events.clinicwebhookendpoint": {OPERATOR: "vc"},
    "events.event": {PHARMACIST: "v", SUPPORT: "v", OPERATOR: "v", ADMIN: "v"},
    "events.outboxmessage": {OPERATOR: "v"},
    "events.processedevent": {OPERATOR: "v"},
    "events.webhookdelivery": {SUPPORT: "v", OPERATOR: "vc"},
    "notifications.notification": {SUPPORT: "v", OPERATOR: "v"},
    "oauth2_provider.accesstoken": {},
    "oauth2_provider.application": {ADMIN: "vac"},
    "oauth2_provider.grant": {},
    "oauth2_provider.idtoken": {},
    "oauth2_provider.refreshtoken": {},
    "otp_totp.totpdevice": {ADMIN: "vd"},
    "patients.clinic": {PHARMACIST: "v", OPERATOR: "v", FINANCE: "v", ADMIN: "vac"},
    "patients.clinicclient": {OPERATOR: "v", ADMIN: "vac"},
    "patients.idempotencykey": {},
    "patients.patient": {PHARMACIST: "v", SUPPORT: "v", ADMIN: "v"},
    "pharmacy.deadletter": {PHARMACIST: "v", OPERATOR: "vc"},
    "pharmacy.dispatch": {SUPPORT: "v", OPERATOR: "vc"},
    "pharmacy.gatewaywebhookevent": {OPERATOR: "v"},
    "pharmacy.orderalert": {OPERATOR: "vc"},
    "pharmacy.partner": {OPERATOR: "vac"},
    "pharmacy.partnerstock": {OPERATOR: "v"},
    "pharmacy.stockfeedevent": {OPERATOR: "v"},
    "prescriptions.allergyclass": {},
    "prescriptions.formularyrelease": {},
    "prescriptions.interactionrule": {},
    "prescriptions.paediatricdoserule": {},
    "prescriptions.medication": {PHARMACIST: "v", SUPPORT: "v", FINANCE: "v", ADMIN: "v"},
    "prescriptions.pharmacistprofile": {ADMIN: "v"},
    "prescriptions.pharmacistqueue": {PHARMACIST: "v"},
    "prescriptions.prescriber": {PHARMACIST: "v", SUPPORT: "v", ADMIN: "v"},
    "prescriptions.prescription": {PHARMACIST: "v", SUPPORT: "v", OPERATOR: "v", FINANCE: "v", ADMIN: "v"},
    "prescriptions.repeatseries": {PHARMACIST: "vc", SUPPORT: "v"},
    "support.enquiry": {PHARMACIST: "vc", SUPPORT: "vac"},
    "support.supportaction": {SUPPORT: "v", ADMIN: "v"},
}

# Each admin action ("app.model.action") and the roles offered it.
ADMIN_ACTIONS: dict[str, tuple[str, ...]] = {
    "axes.accessattempt.cleanup_expired_attempts": (ADMIN,),
    "billing.cancellationrequest.resolve": (FINANCE,),
    "billing.claimbatch.export_csv": (FINANCE,),
    "billing.claimbatch.rebuild": (FINANCE,),
    "billing.claimbatch.submit": (FINANCE,),
    "billing.payment.sync_from_stripe": (FINANCE,),
    "billing.refund.retry": (FINANCE,),
    "django_celery_beat.periodictask.disable_tasks": (),
    "django_celery_beat.periodictask.enable_tasks": (),
    "django_celery_beat.periodictask.run_tasks": (),
    "django_celery_beat.periodictask.toggle_tasks": (),
    "events.clinicwebhookendpoint.rotate_secret": (OPERATOR,),
    "events.webhookdelivery.resend": (OPERATOR,),
    "oauth2_provider.accesstoken.revoke_tokens": (),
    "oauth2_provider.refreshtoken.revoke_tokens": (),
    "patients.clinicclient.revoke": (ADMIN,),
    "patients.patient.merge_into_oldest": (),
    "pharmacy.deadletter.cancel_with_compensation": (PHARMACIST,),
    "pharmacy.deadletter.replay": (OPERATOR,),
    "pharmacy.orderalert.resolve": (OPERATOR,),
    "pharmacy.dispatch.route_again": (OPERATOR,),
    "prescriptions.prescription.cancel_with_compensation": (PHARMACIST,),
    "prescriptions.repeatseries.pause": (PHARMACIST,),
    "prescriptions.repeatseries.resume": (PHARMACIST,),
    "prescriptions.repeatseries.stop": (PHARMACIST,),
    "support.enquiry.assign_to_me": (PHARMACIST, SUPPORT),
}

# Each page added to the admin (its URL name) and the roles that may open it.
ADMIN_PAGES: dict[str, tuple[str, ...]] = {
    "billing_claimbatch_build": (FINANCE,),
    "billing_payment_reconciliation": (FINANCE,),
    "dashboard": (OPERATOR, ADMIN),
    "dashboard_dead_letter_replay": (OPERATOR,),
    "dashboard_tiles": (OPERATOR, ADMIN),
    "otp_totp_totpdevice_config": (),
    "otp_totp_totpdevice_qrcode": (),
    "patients_clinic_permissions": (ADMIN,),
    "patients_clinic_permissions_manage_group": (ADMIN,),
    "patients_clinic_permissions_manage_user": (ADMIN,),
    "prescriptions_prescription_review": (PHARMACIST,),
    "support_patient": (PHARMACIST, SUPPORT),
    "support_patient_action": (PHARMACIST, SUPPORT),
    "support_patient_find": (PHARMACIST, SUPPORT),
}


_VIEW_NAMES = {"v": "view", "a": "add", "c": "change", "d": "delete"}


def matrix_markdown() -> str:
    """The matrix as the README shows it: admins, admin actions, added pages, console actions."""
    order = list(ROLE_PERMISSIONS)
    header = ["| " + " | ".join(["", *order]) + " |", "|" + "---|" * (len(order) + 1)]

    def row(name: str, cells: list[str]) -> str:
        return "| " + " | ".join([name, *(cell or "—" for cell in cells)]) + " |"

    def holders(allowed: tuple[str, ...] | set[str]) -> list[str]:
        return ["yes" if role in allowed else "" for role in order]

    lines = ["Admin views (v = list and read, a = add, c = change, d = delete):", "", *header]
    for model, by_role in sorted(ADMIN_MODELS.items()):
        lines.append(row(f"`{model}`", [" ".join(by_role.get(role, "")) for role in order]))
    lines += ["", "Admin actions:", "", *header]
    lines += [row(f"`{action}`", holders(allowed)) for action, allowed in sorted(ADMIN_ACTIONS.items())]
    lines += ["", "Pages added to the admin (URL name):", "", *header]
    lines += [row(f"`{page}`", holders(allowed)) for page, allowed in sorted(ADMIN_PAGES.items())]
    lines += ["", "Back-office console actions (support/views.py) and the permission each checks:", ""]
    lines += ["| " + " | ".join(["", "permission", *order]) + " |", "|" + "---|" * (len(order) + 2)]
    for action, permission in sorted(ACTION_PERMISSIONS.items()):
        allowed = {role for role in order if not permission or permission in ROLE_PERMISSIONS[role]}
        lines.append(
            row(f"`{action}`", [f"`{permission}`" if permission else "any staff", *holders(allowed)])
        )
    return "\n".join(lines) + "\n"
