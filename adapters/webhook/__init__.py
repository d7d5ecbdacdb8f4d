"""Webhook receiver: pushed events become canonical envelopes on the broker."""

from adapters.webhook.receiver import WebhookEndpoint, WebhookReceiver, sign

__all__ = ["WebhookEndpoint", "WebhookReceiver", "sign"]
