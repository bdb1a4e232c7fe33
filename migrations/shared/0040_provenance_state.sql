-- A provenance statement's state (issue "the outbound wall, round two", item 6): a statement
-- is signed and recorded before its change is written (core/src/safe_outputs/attest.rs), so
-- it starts `pending`; it becomes `applied` only in the transaction that marks its proposal
-- applied (the forge accepted the write: a pull request's push and the pull request, a
-- comment, the labels, an issue), or `failed` with the write's reason (already passed
-- through the run's outbound wall) in the one that fails its proposal for good. Only an
-- applied statement is served: a signed statement of a change the forge refused is never
-- handed out.
ALTER TABLE provenance ADD COLUMN state TEXT NOT NULL DEFAULT 'pending';
-- Why the write failed, for a `failed` statement; NULL otherwise.
ALTER TABLE provenance ADD COLUMN reason TEXT;

-- Statements recorded before this migration settle as their proposals did.
UPDATE provenance SET state = 'applied'
WHERE proposal_id IN (SELECT id FROM proposals WHERE state = 'applied');
UPDATE provenance SET state = 'failed',
    reason = COALESCE(
        (SELECT p.reason FROM proposals p WHERE p.id = provenance.proposal_id),
        'the change was not applied')
WHERE proposal_id IN (SELECT id FROM proposals WHERE state = 'failed' AND retry_at IS NULL);
