"""Delivery feedback, pure: verifying provider webhooks and mapping their events onto the
delivery log and the suppression list (`sendgrid_events`, `twilio_status`), and the
unsubscribe page (`unsubscribe`). No I/O here: the routes are notifier/operations/feedback_web.py,
the SQL is reached through notifier/store/feedback.py.
"""
