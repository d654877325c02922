-- Finds the events a request with an idempotency key appended, for a retry
-- after the first attempt died between commit and storing its response.
CREATE INDEX events_idempotency_key ON events ((metadata ->> 'idempotencyKey'))
  WHERE metadata ->> 'idempotencyKey' IS NOT NULL;
