"""The back office's own pages (registered by support.admin_site): "my work", the operator
dashboard, and the support console's patient page with its actions.

Each view checks the one permission support/roles.py ACTION_PERMISSIONS names for it, and
support staff reach only the patients of the clinics assigned to them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.admin import site
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Min, Q
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from audit.models import PatientAccess
from audit.services import patient_access_record
from billing.models import CancellationRequest
from common.auth import staff_user_of
from common.errors import DomainError
from events.models import WebhookDelivery
from pharmacy.models import DeadLetter
from pharmacy.services import dead_letter_replay
from prescriptions.models import Prescription, Status
from saga import cancellation
from support import charts, dashboard, enquiries, selectors
from support.models import Enquiry
from support.roles import ACTION_PERMISSIONS
from support.services import staff_clinics


def _require(request: HttpRequest, action: str) -> None:
    permission = ACTION_PERMISSIONS[action]
    if permission and not request.user.has_perm(permission):
        raise PermissionDenied


# --- My work --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkItem:
    key: str
    count: int
    label: str
    url: str
    detail: str = ""
    urgent: bool = False


def _waited(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return ""
    minutes = (now - moment).total_seconds() / 60
    return f"oldest waiting {minutes:.0f} min" if minutes < 120 else f"oldest waiting {minutes / 60:.1f} h"


def my_work(request: HttpRequest) -> list[WorkItem]:
    """The first thing each role sees: its queues, with counts (a few queries per role held)."""
    user, now, items = staff_user_of(request), timezone.now(), []
    enquiry_list = reverse("admin:support_enquiry_changelist")
    if user.has_perm("prescriptions.add_pharmacistreview"):
        queue = Prescription.objects.filter(status=Status.AWAITING_PHARMACIST).aggregate(
            count=Count("id"), oldest=Min("updated_at")
        )
        limit = timedelta(minutes=settings.DASHBOARD_THRESHOLDS["oldest_awaiting_pharmacist_minutes"])
        items.append(
            WorkItem(
                "pharmacist_queue",
                queue["count"],
                "in the pharmacist queue",
                reverse("admin:prescriptions_pharmacistqueue_changelist"),
                _waited(queue["oldest"], now),
                bool(queue["oldest"] and now - queue["oldest"] > limit),
            )
        )
    if user.has_perm("support.view_enquiry"):
        counts = selectors.enquiry_counts(user=user, now=now)
        if user.has_perm("support.add_enquiry"):
            items.append(
                WorkItem(
                    "open_enquiries",
                    counts["open"],
                    "open enquiries",
                    f"{enquiry_list}?queue=unresolved",
                    f"{counts['overdue']} overdue, {counts['mine']} assigned to you",
                    counts["overdue"] > 0,
                )
            )
        if user.has_perm("prescriptions.add_pharmacistreview"):
            items.append(
                WorkItem(
                    "escalated_enquiries",
                    counts["escalated"],
                    "enquiries escalated to a pharmacist",
                    f"{enquiry_list}?queue=escalated",
                    urgent=counts["escalated"] > 0,
                )
            )
    if user.has_perm("support.view_dashboard"):
        letters = DeadLetter.objects.filter(resolved_at__isnull=True).aggregate(
            count=Count("id"), oldest=Min("created_at")
        )
        failing = WebhookDelivery.objects.filter(
            Q(status=WebhookDelivery.Status.FAILED) | Q(status=WebhookDelivery.Status.PENDING, attempts__gt=0)
        ).count()
        items += [
            WorkItem(
                "dead_letters",
                letters["count"],
                "dead letters to replay or cancel",
                reverse("admin:dashboard"),
                _waited(letters["oldest"], now),
                letters["count"] > settings.DASHBOARD_THRESHOLDS["dead_letters"],
            ),
            WorkItem(
                "failing_webhooks",
                failing,
                "failing clinic webhook deliveries",
                reverse("admin:dashboard"),
                urgent=failing > settings.DASHBOARD_THRESHOLDS["failing_webhooks"],
            ),
        ]
    if user.has_perm("billing.change_cancellationrequest"):
        waiting = CancellationRequest.objects.filter(resolved_at__isnull=True).count()
        items.append(
            WorkItem(
                "cancellation_requests",
                waiting,
                "cancellation requests to resolve",
                reverse("admin:billing_cancellationrequest_changelist") + "?resolved_at__isnull=True",
            )
        )
    return items


# --- Operator dashboard ---------------------------------------------------------------------------


def _minutes(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _dashboard_context(request: HttpRequest) -> dict[str, Any]:
    snapshot = dashboard.pipeline_snapshot()
    funnel = charts.horizontal_bars(
        [
            charts.Bar(str(dict(Status.choices)[status]), count, css_class=f"status-{status}")
            for status, count in snapshot.by_status.items()
        ],
        title="Prescriptions by status",
    )
    throughput = charts.paired_columns(
        [
            (timezone.localtime(row["hour"]).strftime("%H:00"), row["received"], row["delivered"])
            for row in snapshot.throughput
        ],
        title="Received and delivered per hour, last 24 hours",
        legend=("received", "delivered"),
    )
    stages = charts.horizontal_bars(
        [
            bar
            for stage in snapshot.stage_durations
            for bar in (
                charts.Bar(f"{stage.label} p50", stage.p50_seconds, _minutes(stage.p50_seconds), "p50"),
                charts.Bar(f"{stage.label} p95", stage.p95_seconds, _minutes(stage.p95_seconds), "p95"),
            )
        ],
        title="Time in each stage, last 24 hours (p50 and p95)",
    )
    depths = charts.horizontal_bars(
        [
            charts.Bar(queue, depth or 0, "unknown" if depth is None else str(depth))
            for queue, depth in snapshot.queue_depths.items()
        ],
        title="Celery queue depths",
    )
    return {
        "snapshot": snapshot,
        "tiles": dashboard.tiles(snapshot, order_alerts=request.user.has_perm("pharmacy.view_orderalert")),
        "funnel_chart": funnel,
        "throughput_chart": throughput,
        "stage_chart": stages,
        "depth_chart": depths,
        "can_replay": request.user.has_perm(ACTION_PERMISSIONS["dashboard.replay_dead_letter"]),
        "refresh_seconds": settings.DASHBOARD_REFRESH_SECONDS,
        "stale_seconds": settings.RECONCILE_STALE_SECONDS,
        "dispatch_stale_seconds": settings.RECONCILE_DISPATCH_STALE_SECONDS,
        "now": snapshot.taken_at,
    }


def dashboard_view(request: HttpRequest) -> HttpResponse:
    _require(request, "dashboard.view")
    context = {
        **site.each_context(request),
        "title": "Operator dashboard",
        **_dashboard_context(request),
    }
    return TemplateResponse(request, "admin/support/dashboard.html", context)


def dashboard_tiles_view(request: HttpRequest) -> HttpResponse:
    """The dashboard's body alone, fetched by static/support/dashboard.js to refresh in place."""
    _require(request, "dashboard.view")
    response = TemplateResponse(request, "admin/support/dashboard_tiles.html", _dashboard_context(request))
    response["Cache-Control"] = "no-store"
    return response


@require_POST
def dead_letter_replay_view(request: HttpRequest, dead_letter_id: int) -> HttpResponse:
    _require(request, "dashboard.view")
    _require(request, "dashboard.replay_dead_letter")
    letters = DeadLetter.objects.all()
    if not request.user.is_superuser:
        letters = letters.filter(
            dispatch__prescription__clinic__in=staff_clinics(user=staff_user_of(request))
        )
    letter = get_object_or_404(letters, pk=dead_letter_id)
    if dead_letter_replay(dead_letter_id=letter.pk, actor=f"user:{request.user.pk}"):
        messages.success(request, f"Dead letter #{letter.pk} replayed: the dispatch is being sent again.")
    else:
        messages.warning(request, f"Dead letter #{letter.pk} was already resolved; nothing was sent.")
    return HttpResponseRedirect(reverse("admin:dashboard"))


# --- Support console: finding a patient, the identity check, the patient page --------------------


class FindForm(forms.Form):
    q = forms.CharField(
        label="Find a patient",
        max_length=200,
        help_text='NHS number, email, phone, "Family-name YYYY-MM-DD", prescription number or tracking number.',
    )


class IdentityForm(forms.Form):
    family_name = forms.CharField(label="Family name", max_length=100)
    birth_date = forms.DateField(label="Date of birth", widget=forms.DateInput(attrs={"type": "date"}))
    postal_code = forms.CharField(label="Postcode", max_length=20)


class ActionForm(forms.Form):
    ACTIONS = [
        ("resend_notification", "Resend the patient notification"),
        ("resend_webhook", "Resend the clinic webhook"),
        ("request_cancellation", "Request a cancellation"),
        ("escalate", "Escalate to a pharmacist"),
        ("add_note", "Add a note"),
        ("resolve", "Resolve the enquiry"),
    ]
    action = forms.ChoiceField(choices=ACTIONS)
    target = forms.IntegerField(required=False, min_value=1)
    enquiry = forms.IntegerField(required=False, min_value=1)
    reason = forms.CharField(max_length=2000, widget=forms.Textarea(attrs={"rows": 2}))


class OpenEnquiryForm(forms.Form):
    channel = forms.ChoiceField(choices=Enquiry.Channel.choices)
    category = forms.ChoiceField(choices=Enquiry.Category.choices)
    prescription = forms.IntegerField(required=False, min_value=1)
    note = forms.CharField(required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2}))


ACTION_NAMES = {
    "resend_notification": "patient_page.resend_notification",
    "resend_webhook": "patient_page.resend_webhook",
    "request_cancellation": "patient_page.request_cancellation",
    "escalate": "enquiry.escalate",
    "add_note": "enquiry.add_note",
    "resolve": "enquiry.resolve",
}
SESSION_KEY = "support_identity_checked"


def _identity_checked(request: HttpRequest, patient_id: int) -> bool:
    passed_at = request.session.get(SESSION_KEY, {}).get(str(patient_id))
    if not passed_at:
        return False
    age = timezone.now() - datetime.fromisoformat(passed_at)
    return age < timedelta(minutes=settings.SUPPORT_IDENTITY_CHECK_MINUTES)


def _identity_remember(request: HttpRequest, patient_id: int) -> None:
    checked = {
        key: value
        for key, value in request.session.get(SESSION_KEY, {}).items()
        if timezone.now() - datetime.fromisoformat(value)
        < timedelta(minutes=settings.SUPPORT_IDENTITY_CHECK_MINUTES)
    }
    checked[str(patient_id)] = timezone.now().isoformat()
    request.session[SESSION_KEY] = checked


def _patient_or_404(request: HttpRequest, patient_id: int) -> Any:
    patient = selectors.patients_in_scope(user=staff_user_of(request)).filter(pk=patient_id).first()
    if patient is None:
        raise Http404("No such patient in your clinics.")
    return patient


def _page_url(patient_id: int, anchor: str = "") -> str:
    url = reverse("admin:support_patient", args=[patient_id])
    return f"{url}#{anchor}" if anchor else url


def patient_find_view(request: HttpRequest) -> HttpResponse:
    _require(request, "patient_page.find")
    form = FindForm(request.GET or None)
    matches = (
        selectors.patient_search(user=staff_user_of(request), term=form.cleaned_data["q"])
        if form.is_valid()
        else []
    )
    context = {
        **site.each_context(request),
        "title": "Find a patient",
        "form": form,
        "matches": matches,
        "searched": form.is_bound,
    }
    return TemplateResponse(request, "admin/support/find.html", context)


def patient_page_view(request: HttpRequest, patient_id: int) -> HttpResponse:
    _require(request, "patient_page.view")
    patient = _patient_or_404(request, patient_id)
    identity_form = IdentityForm(request.POST or None)
    if request.method == "POST":
        _require(request, "patient_page.identity_check")
        if identity_form.is_valid():
            try:
                passed = enquiries.identity_check(
                    patient_id=patient.pk, staff_user=staff_user_of(request), **identity_form.cleaned_data
                )
            except enquiries.SupportActionRefused as refused:
                messages.error(request, refused.detail)
                passed = False
            else:
                if passed:
                    _identity_remember(request, patient.pk)
                    return HttpResponseRedirect(_page_url(patient.pk))
                messages.error(request, "Those details do not match our records. Ask the caller again.")
    context: dict[str, Any] = {
        **site.each_context(request),
        "title": f"Patient #{patient.pk}",
        "patient_id": patient.pk,
        "clinic": patient.clinic,
        "checked": _identity_checked(request, patient.pk),
        "identity_form": identity_form,
    }
    if context["checked"]:
        patient_access_record(
            patients=[patient],
            channel=PatientAccess.Channel.ADMIN,
            action=PatientAccess.Action.DETAIL,
            request=request,
            staff_user=staff_user_of(request),
        )
        page = selectors.patient_page(patient=patient)
        context.update(
            page=page,
            action_form=ActionForm(),
            open_form=OpenEnquiryForm(),
            can={
                name: request.user.has_perm(ACTION_PERMISSIONS[action])
                for name, action in ACTION_NAMES.items()
            }
            | {"open_enquiry": request.user.has_perm(ACTION_PERMISSIONS["enquiry.open"])},
            enquiry_choices=[
                enquiry for enquiry in page.enquiries if enquiry.status != Enquiry.Status.RESOLVED
            ],
        )
    return TemplateResponse(request, "admin/support/patient.html", context)


@require_POST
def patient_action_view(request: HttpRequest, patient_id: int) -> HttpResponse:
    """One support action (or opening an enquiry) from the patient page; every one needs the
    identity check passed in this session, its own permission and, but for opening, a reason."""
    _require(request, "patient_page.view")
    patient = _patient_or_404(request, patient_id)
    if not _identity_checked(request, patient.pk):
        messages.error(request, "Check the caller's identity first.")
        return HttpResponseRedirect(_page_url(patient.pk))
    if request.POST.get("action") == "open_enquiry":
        return _enquiry_open(request, patient)
    form = ActionForm(request.POST)
    if not form.is_valid():
        messages.error(request, "A reason is required, and the action must be one of the buttons.")
        return HttpResponseRedirect(_page_url(patient.pk))
    action, target, enquiry_id = (form.cleaned_data[name] for name in ("action", "target", "enquiry"))
    _require(request, ACTION_NAMES[action])
    reason = form.cleaned_data["reason"]
    if enquiry_id is not None and not Enquiry.objects.filter(pk=enquiry_id, patient=patient).exists():
        raise Http404("No such enquiry for this patient.")
    try:
        message = _act(request, patient, action, target, enquiry_id, reason)
    except enquiries.SupportActionRefused as refused:
        messages.error(request, refused.detail)
    else:
        messages.success(request, message)
    return HttpResponseRedirect(_page_url(patient.pk, "actions"))


def _owned_target(patient: Any, action: str, target: int | None) -> int:
    """The target id, refused unless it belongs to this patient."""
    from notifications.models import Notification

    if target is None:
        raise Http404("That is not this patient's.")
    owned = {
        "resend_notification": Notification.objects.filter(pk=target, patient=patient),
        "resend_webhook": WebhookDelivery.objects.filter(
            pk=target, aggregate_id__in=Prescription.objects.filter(patient=patient).values("id")
        ),
        "request_cancellation": Prescription.objects.filter(pk=target, patient=patient),
    }[action]
    if not owned.exists():
        raise Http404("That is not this patient's.")
    return target


def _act(
    request: HttpRequest, patient: Any, action: str, target: int | None, enquiry_id: int | None, reason: str
) -> str:
    user = staff_user_of(request)
    if action == "resend_notification":
        resend = enquiries.support_notification_resend(
            notification_id=_owned_target(patient, action, target),
            staff_user=user,
            reason=reason,
            enquiry_id=enquiry_id,
        )
        return f"The {resend.kind} {resend.get_channel_display().lower()} is being sent again."
    if action == "resend_webhook":
        resent = enquiries.support_webhook_resend(
            delivery_id=_owned_target(patient, action, target),
            staff_user=user,
            reason=reason,
            enquiry_id=enquiry_id,
        )
        return (
            "The clinic webhook is being sent again." if resent else "That webhook is still being delivered."
        )
    if action == "request_cancellation":
        return f"Cancellation: {_cancel(user, _owned_target(patient, action, target), reason, enquiry_id)}"
    if enquiry_id is None:
        raise enquiries.SupportActionRefused("Choose the enquiry this is about.")
    if action == "escalate":
        moved = enquiries.enquiry_escalate(enquiry_id=enquiry_id, staff_user=user, reason=reason)
        return "Escalated to a pharmacist." if moved else "That enquiry was not open; nothing changed."
    if action == "add_note":
        enquiries.enquiry_add_note(enquiry_id=enquiry_id, staff_user=user, body=reason)
        return "Note added."
    resolved = enquiries.enquiry_resolve(enquiry_id=enquiry_id, staff_user=user, resolution=reason)
    return "Enquiry resolved." if resolved else "That enquiry was already resolved."


def _cancel(user: Any, prescription_id: int, reason: str, enquiry_id: int | None) -> str:
    """Through the saga's cancel-with-compensation, the same path as the API; a prescription
    the pharmacy already has goes to the staff cancellation queue, an outcome like any other."""
    reason = enquiries.support_cancellation_check(
        prescription_id=prescription_id, staff_user=user, reason=reason
    )
    try:
        after = cancellation.prescription_cancel_request(
            clinic=None, prescription_id=prescription_id, reason=reason, actor=f"user:{user.pk}"
        )
    except DomainError as refused:
        outcome = str(refused.detail)
    else:
        outcome = (
            "cancelled"
            if after.status == Status.CANCELLED
            else f"cancellation requested from the pharmacy (now {after.get_status_display()})"
        )
    enquiries.support_cancellation_record(
        prescription_id=prescription_id,
        staff_user=user,
        reason=reason,
        outcome=outcome,
        enquiry_id=enquiry_id,
    )
    return outcome


def _enquiry_open(request: HttpRequest, patient: Any) -> HttpResponse:
    _require(request, "enquiry.open")
    form = OpenEnquiryForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose a channel and a category.")
        return HttpResponseRedirect(_page_url(patient.pk, "enquiries"))
    try:
        enquiry = enquiries.enquiry_open(
            patient_id=patient.pk,
            prescription_id=form.cleaned_data["prescription"],
            channel=form.cleaned_data["channel"],
            category=form.cleaned_data["category"],
            note=form.cleaned_data["note"],
            staff_user=staff_user_of(request),
            assignee_id=request.user.pk,
        )
    except enquiries.SupportActionRefused as refused:
        messages.error(request, refused.detail)
    else:
        messages.success(request, f"{enquiry} opened, due {timezone.localtime(enquiry.due_at):%d %b %H:%M}.")
    return HttpResponseRedirect(_page_url(patient.pk, "enquiries"))
