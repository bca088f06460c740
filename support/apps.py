from axes.apps import AppConfig as AxesConfig
from django.apps import AppConfig
from django_otp.plugins.otp_totp.apps import DefaultConfig as OtpTotpConfig


class SupportConfig(AppConfig):
    """The back office: staff roles, clinic assignments and 2FA enrolment, the support console,
    the operator dashboard and the metrics endpoint."""

    name = "support"
    verbose_name = "Support"
    default = True

    def ready(self) -> None:
        from support.metrics import task_metrics_connect

        # Celery's task signals fire only inside workers; connecting them elsewhere is harmless.
        task_metrics_connect()


# Third-party apps under the names staff know them by (INSTALLED_APPS uses these configs).
class TwoFactorDevicesConfig(OtpTotpConfig):
    verbose_name = "Two-factor devices"


class SignInLockoutsConfig(AxesConfig):
    verbose_name = "Sign-in lockouts"
