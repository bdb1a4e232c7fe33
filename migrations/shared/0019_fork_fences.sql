-- Fork fences (issue 29): runs of pull requests from forks (`runs.secrets_allowed = FALSE`)
-- go only to runners that accept them.
--
-- Whether a registration token's runners may take steps of fork runs. Existing scoped
-- tokens do not (the safe default: a token made for `zone=prod` must not start running
-- strangers' code); `plue runner-token create --accept-forks` makes one that does.
-- One-time tokens take the setting of the pool class that minted them.
ALTER TABLE runner_tokens ADD COLUMN accept_forks BOOLEAN NOT NULL DEFAULT FALSE;

-- Whether a runner may claim steps of fork runs, fixed at registration from its token
-- (and its own say: a runner may refuse forks its token allows). Existing runners: those
-- of the shared token announcing no labels accept forks, as they ran them before; every
-- other runner (scoped or pool token, or labels) does not until it registers anew.
ALTER TABLE runners ADD COLUMN accept_forks BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE runners SET accept_forks = TRUE WHERE token_id IS NULL AND labels = '{}';
