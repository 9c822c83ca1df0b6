"""Webhooks: registry changes announced durably over HTTP, signed per Standard Webhooks.

events.py names what can be announced; outbox.py writes deliveries in the transaction of the
change; signing.py signs them; targets.py decides where they may go and connects there;
dispatcher.py sends them with retries; service.py manages subscriptions and the delivery log.
"""
