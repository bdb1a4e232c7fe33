-- `untrusted_id_tokens`: steps of untrusted runs (a pull request from a fork, an event the
-- engine itself caused) may use the environment after its review, to get OpenID Connect
-- tokens that say the run is untrusted (`plue_core::id_tokens`); never its secrets.
ALTER TABLE environments ADD COLUMN untrusted_id_tokens BOOLEAN NOT NULL DEFAULT FALSE;
