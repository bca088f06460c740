"""Names vulture cannot see being used: Django, DRF, Celery, django-otp, pydantic and the
simulators' HTTP servers reach them by name (model and serializer fields, middleware and
backends named in settings, handler hooks, template context). Regenerate the candidates with
`vulture --make-whitelist` and keep only names that really are reached that way."""

# ruff: noqa

is_anonymous  # variable, accounts/authentication.py
ClinicOAuth2Authentication  # class, accounts/authentication.py
_.oauth2_error  # attribute, accounts/authentication.py
_.has_permission  # method, accounts/authentication.py
ClinicOAuth2Validator  # class, accounts/authentication.py
ClinicOAuth2Scheme  # class, accounts/schema.py
auto_schema  # variable, accounts/schema.py
TenantTransactionMiddleware  # class, accounts/tenancy.py
ClientRateThrottle  # class, accounts/throttling.py
help  # variable, agents/management/commands/run_mcp_server.py
requires_system_checks  # variable, agents/management/commands/run_mcp_server.py
next_page  # variable, agents/schemas.py
on_formulary  # variable, agents/schemas.py
meaning  # variable, agents/schemas.py
status_text  # variable, agents/schemas.py
status_text  # variable, agents/schemas.py
findings  # variable, agents/schemas.py
next_page  # variable, agents/schemas.py
truncated  # variable, agents/schemas.py
_.verify_token  # method, agents/server.py
default_error_messages  # variable, api/fields.py
default_error_messages  # variable, api/fields.py
AdminContentSecurityPolicyMiddleware  # class, api/hardening.py
RejectNullCharactersMiddleware  # class, api/hardening.py
NoStoreMiddleware  # class, api/hardening.py
problem_responses  # function, api/openapi.py
generator  # variable, api/openapi.py
BoundedJSONParser  # class, api/parsers.py
exception_handler  # function, api/problems.py
handler404  # function, api/problems.py
handler500  # function, api/problems.py
handler400  # function, api/problems.py
AuditActorMiddleware  # class, audit/middleware.py
_._get_remote_addr  # method, audit/middleware.py
_._get_remote_port  # method, audit/middleware.py
redacted  # function, audit/registry.py
payment_intent_confirm  # function, billing/adapters/stripe.py
help  # variable, billing/management/commands/nhs_claim_build.py
completed_at  # variable, billing/models.py
payment_intent_id  # variable, billing/models.py
status_when_requested  # variable, billing/models.py
resolved_at  # variable, billing/models.py
exemption_evidence  # variable, billing/models.py
exemption_verified  # variable, billing/models.py
recorded_at  # variable, billing/models.py
built_at  # variable, billing/models.py
submitted_at  # variable, billing/models.py
ours  # variable, billing/services/payments.py
stripes  # variable, billing/services/payments.py
method_name  # variable, common/logs.py
logging_config  # function, common/logs.py
structlog_configure  # function, common/logs.py
RequestIdMiddleware  # class, common/logs.py
redis_url  # function, config/embedded.py
_.__class__  # attribute, config/urls.py
handler400  # variable, config/urls.py
handler404  # variable, config/urls.py
handler500  # variable, config/urls.py
urlpatterns  # variable, config/urls.py
published_at  # variable, events/models.py
settled_at  # variable, events/models.py
processed_at  # variable, events/models.py
rotated_at  # variable, events/models.py
delivered_at  # variable, events/models.py
attempted_at  # variable, events/models.py
publications  # variable, events/models.py
_.rotated_at  # attribute, events/webhooks.py
_.select_parser  # method, interop/fhir/api.py
_.select_renderer  # method, interop/fhir/api.py
format_suffix  # variable, interop/fhir/api.py
urlpatterns  # variable, interop/fhir/urls.py
sent_at  # variable, notifications/models.py
resend_of  # variable, notifications/models.py
ConsoleSmsBackend  # class, notifications/sms.py
search_help_text  # variable, patients/admin.py
sortable_by  # variable, patients/admin.py
help  # variable, patients/management/commands/rotate_keys.py
help  # variable, patients/management/commands/seed_demo.py
NONE  # variable, patients/models.py
MILD  # variable, patients/models.py
CONGENITAL_HEART_DISEASE  # variable, patients/models.py
CARDIAC_SURGERY  # variable, patients/models.py
FAMILY_SUDDEN_CARDIAC_DEATH  # variable, patients/models.py
EXERTIONAL_BREATHLESSNESS  # variable, patients/models.py
EXERTIONAL_SYNCOPE  # variable, patients/models.py
PALPITATIONS  # variable, patients/models.py
CARDIAC_CHEST_PAIN  # variable, patients/models.py
HEART_FAILURE  # variable, patients/models.py
HEART_MURMUR  # variable, patients/models.py
HYPERTENSION  # variable, patients/models.py
ARRHYTHMIA  # variable, patients/models.py
OTHER_HEART_DISEASE  # variable, patients/models.py
merged_into  # variable, patients/models.py
clinical_context_updated_on  # variable, patients/models.py
UNABLE_TO_ASSESS  # variable, patients/models.py
MILD  # variable, patients/models.py
MG  # variable, patients/models.py
MICROGRAM  # variable, patients/models.py
G  # variable, patients/models.py
started_on  # variable, patients/models.py
recorded_on  # variable, patients/models.py
manifestation  # variable, patients/serializers.py
started_on  # variable, patients/serializers.py
PartnerCannotFill  # class, pharmacy/gateway.py
acknowledged_at  # variable, pharmacy/models.py
status_checked_at  # variable, pharmacy/models.py
resolved_at  # variable, pharmacy/models.py
completed_at  # variable, pharmacy/models.py
resolved_at  # variable, pharmacy/models.py
_.resolved_at  # attribute, pharmacy/services.py
_.timeline_events  # attribute, prescriptions/api.py
help  # variable, prescriptions/management/commands/load_formulary.py
help  # variable, prescriptions/management/commands/rebuild_projections.py
GMC  # variable, prescriptions/models.py
NMC  # variable, prescriptions/models.py
GPHC  # variable, prescriptions/models.py
NPI  # variable, prescriptions/models.py
DEA  # variable, prescriptions/models.py
indication  # variable, prescriptions/models.py
loaded_at  # variable, prescriptions/models.py
summary  # variable, prescriptions/models.py
decided_at  # variable, prescriptions/models.py
GPHC  # variable, prescriptions/models.py
PSNI  # variable, prescriptions/models.py
US_STATE_BOARD  # variable, prescriptions/models.py
next_due_on  # variable, prescriptions/models.py
_.next_due_on  # attribute, prescriptions/repeats.py
recorded_on  # variable, prescriptions/serializers.py
timeline  # variable, prescriptions/serializers.py
answer_delay  # variable, sandbox/gateway.py
timeouts  # variable, sandbox/gateway.py
webhooks_sent  # variable, sandbox/gateway.py
webhooks_failed  # variable, sandbox/gateway.py
webhooks_dropped  # variable, sandbox/gateway.py
cancellations  # variable, sandbox/gateway.py
rejections  # variable, sandbox/gateway.py
refused_by_eps_rules  # variable, sandbox/gateway.py
_.webhooks_dropped  # attribute, sandbox/gateway.py
_.refused_by_eps_rules  # attribute, sandbox/gateway.py
_.timeouts  # attribute, sandbox/gateway.py
_.rejections  # attribute, sandbox/gateway.py
_.webhooks_dropped  # attribute, sandbox/gateway.py
_.webhooks_sent  # attribute, sandbox/gateway.py
_.webhooks_failed  # attribute, sandbox/gateway.py
_.cancellations  # attribute, sandbox/gateway.py
_.do_GET  # method, sandbox/gateway.py
_.do_POST  # method, sandbox/gateway.py
help  # variable, sandbox/management/commands/run_gateway_simulator.py
requires_system_checks  # variable, sandbox/management/commands/run_gateway_simulator.py
help  # variable, sandbox/management/commands/run_stripe_simulator.py
requires_system_checks  # variable, sandbox/management/commands/run_stripe_simulator.py
daemon_threads  # variable, sandbox/server.py
request_queue_size  # variable, sandbox/server.py
disable_nagle_algorithm  # variable, sandbox/server.py
_.version_string  # method, sandbox/server.py
_.log_message  # method, sandbox/server.py
_.close_connection  # attribute, sandbox/server.py
_.close_connection  # attribute, sandbox/server.py
frame  # variable, sandbox/server.py
protocol_version  # variable, sandbox/stripe.py
_.do_GET  # method, sandbox/stripe.py
_.do_POST  # method, sandbox/stripe.py
model_admin  # variable, support/admin.py
search_help_text  # variable, support/admin.py
formsets  # variable, support/admin.py
_.config_view  # method, support/admin.py
_.qrcode_view  # method, support/admin.py
_._update_form  # method, support/admin_site.py
dead_letter_rows  # variable, support/dashboard.py
is_red  # variable, support/dashboard.py
help  # variable, support/management/commands/seed_back_office.py
help  # variable, support/management/commands/staff_totp_enrol.py
_.collect  # method, support/metrics.py
CHAT  # variable, support/models.py
PAYMENT  # variable, support/models.py
SIDE_EFFECTS  # variable, support/models.py
COMPLAINT  # variable, support/models.py
assignee  # variable, support/models.py
created_by  # variable, support/models.py
escalated_at  # variable, support/models.py
resolved_at  # variable, support/models.py
author  # variable, support/models.py
matrix_markdown  # function, support/roles.py
open_enquiries  # variable, support/selectors.py
timeline  # variable, support/selectors.py
urgent  # variable, support/views.py
q  # variable, support/views.py
paginator  # variable, support/large_tables.py (ModelAdmin.paginator)
_.action_checkbox  # method, support/large_tables.py (ModelAdmin.action_checkbox, a list_display column)
DEBUG  # attribute, scripts/bench_scale.py (settings.DEBUG)
_load_access_token  # method, accounts/authentication.py (django-oauth-toolkit's OAuth2Validator hook)
async_capable  # variable, config/middleware.py (Django's middleware flag)
StaffSessionMiddleware  # class, config/middleware.py (named in settings.MIDDLEWARE)
StaffAuthenticationMiddleware  # class, config/middleware.py (named in settings.MIDDLEWARE)
StaffMessageMiddleware  # class, config/middleware.py (named in settings.MIDDLEWARE)
trust_env  # attribute, events/adapters/http.py (requests.Session)
adding  # attribute, events/services.py (Model._state.adding)
claimed_at  # variable, notifications/models.py (model field)
status_by  # variable, pharmacy/models.py (model field)
_result_cache  # attribute, prescriptions/services.py (Django's prefetch cache)
_prefetch_done  # attribute, prescriptions/services.py (Django's prefetch cache)
_prefetched_objects_cache  # attribute, prescriptions/services.py (Django's prefetch cache)
refused_out_of_stock  # variable, sandbox/gateway.py (a simulator counter, read through /_stats)
orders_created  # variable, sandbox/mailorder/simulator.py (a simulator counter, read through /_stats)
replays  # variable, sandbox/mailorder/simulator.py (a simulator counter, read through /_stats)
rate_limited  # variable, sandbox/mailorder/simulator.py (a simulator counter, read through /_stats)
health_check_done  # attribute, config/celery.py (Django's connection wrapper flag)
CONSUMER_IDLE_WHEN  # variable, saga/journey.py (read by config/settings.py)
rate_limit_rate  # variable, sandbox/mailorder/simulator.py (a knob, read by fault_draw by name)
