-- Webhook deliveries already taken in, by the ITSM's delivery id (Jira's
-- X-Atlassian-Webhook-Identifier): a retried or replayed delivery is acknowledged and dropped.
CREATE TABLE webhook_deliveries (
    connector    TEXT NOT NULL,
    delivery_id  TEXT NOT NULL,
    received_at  TEXT NOT NULL,
    PRIMARY KEY (connector, delivery_id)
);
