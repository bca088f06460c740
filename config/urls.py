from django.contrib import admin
from django.http import HttpRequest, JsonResponse
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from accounts.views import ThrottledTokenView
from billing.views import stripe_webhook
from patients.api import PatientDetailApi, PatientListCreateApi
from pharmacy.views import gateway_webhook, partner_stock_webhook
from prescriptions.api import (
    MedicationListApi,
    PrescriberListApi,
    PrescriptionCancelApi,
    PrescriptionDetailApi,
    PrescriptionListCreateApi,
)
from prescriptions.views import status_page
from support.admin_site import StaffAdminSite
from support.metrics import metrics_view

# Every staff account needs a second factor: the admin admits only OTP-verified sessions, and
# its login form asks for a TOTP code (enrol one with `manage.py staff_totp_enrol`).
admin.site.__class__ = StaffAdminSite

handler400 = "api.problems.handler400"
handler404 = "api.problems.handler404"
handler500 = "api.problems.handler500"


def health(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


api_v1 = [
    path("patients/", PatientListCreateApi.as_view(), name="patient-list"),
    path("patients/<int:pk>/", PatientDetailApi.as_view(), name="patient-detail"),
    path("prescriptions/", PrescriptionListCreateApi.as_view(), name="prescription-list"),
    path("prescriptions/<int:pk>/", PrescriptionDetailApi.as_view(), name="prescription-detail"),
    path(
        "prescriptions/<int:pk>/cancel/",
        PrescriptionCancelApi.as_view(),
        name="prescription-cancel",
    ),
    path("prescribers/", PrescriberListApi.as_view(), name="prescriber-list"),
    path("medications/", MedicationListApi.as_view(), name="medication-list"),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("oauth/token/", ThrottledTokenView.as_view(), name="oauth-token"),
    path("api/v1/", include(api_v1)),
    path("fhir/R4/", include("interop.fhir.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("webhooks/gateway/", gateway_webhook, name="gateway-webhook"),
    path("webhooks/partners/<slug:partner_code>/stock/", partner_stock_webhook, name="partner-stock-webhook"),
    path("webhooks/stripe/", stripe_webhook, name="stripe-webhook"),
    path("health/", health, name="health"),
    path("metrics", metrics_view, name="metrics"),
    path("track/<str:token>/", status_page, name="status-link"),
]
