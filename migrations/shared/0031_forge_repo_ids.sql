-- A registered repository's numeric id on its forge (GitHub's and Gitea's `repository.id`),
-- bound when `--register-installed-repos` registers it (the installation event's ids) or by
-- the first delivery signed with its secret that names one. Later deliveries naming another
-- id are refused: the name now belongs to another repository (a rename, a deletion and a
-- re-creation — repojacking), which must not run with this one's secrets. NULL: not bound yet.
ALTER TABLE repositories ADD COLUMN forge_repo_id BIGINT;
