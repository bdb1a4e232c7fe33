-- The threat check of a safe-output proposal (core/src/safe_outputs/threat/): its verdict
-- (`pass`, `needs_approval` or `refused`), the rules' findings and the model review's
-- answer, as JSON (`threat::Assessment`). NULL: the proposal was not threat-checked (the
-- check was off for its run, or it was refused before the check).
ALTER TABLE proposals ADD COLUMN threat TEXT;
