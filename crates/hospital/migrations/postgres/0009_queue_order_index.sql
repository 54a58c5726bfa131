-- nonstop: expand
-- The next patient to call, read inside every call-next, in the queue's own order: with only
-- (schedule_id, status, weight) indexed, ties on weight were sorted by check-in time across the
-- whole waiting queue, so calling a patient slowed down as the queue grew. Found by the fleet
-- benchmark, whose node got slower minute by minute with long queues.
CREATE INDEX queue_ticket_next ON queue_ticket (schedule_id, status, weight DESC, checked_in_at, id);
