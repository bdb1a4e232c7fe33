-- Installations are the operator's to accept (issue 69): each installation of the GitHub
-- App is judged against the accounts the operator allows (`plue serve
-- --installation-owner`), and the judgement is kept with it. `refused` holds why the
-- engine refused it (NULL: accepted); a refused installation registers no repository and
-- its deliveries start nothing. Every engine judges all recorded installations again at
-- its start, so rows recorded before this migration read as refused until then.
ALTER TABLE github_installations ADD COLUMN refused TEXT;
UPDATE github_installations
SET refused = 'recorded before the engine judged installations: judged again at its next start';
