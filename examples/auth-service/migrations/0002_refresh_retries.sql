-- Which refresh spent a token (its client's `request_id`), and the token
-- that replaced it: an attempt of the same refresh after a committed one
-- whose answer was lost replaces that unused successor rather than counting
-- as a reuse. A successor replaced so is marked spent by '(superseded)'.
ALTER TABLE refresh_tokens ADD COLUMN spent_by TEXT;
ALTER TABLE refresh_tokens ADD COLUMN replaced_by TEXT;
