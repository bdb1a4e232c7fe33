-- Token usage of llm steps: a JSON object {"input_tokens", "output_tokens",
-- "cache_creation_input_tokens", "cache_read_input_tokens"}, NULL for other steps.
-- attempts.usage is one attempt's; step_runs.usage sums every attempt of the step.
ALTER TABLE attempts ADD COLUMN usage TEXT;
ALTER TABLE step_runs ADD COLUMN usage TEXT;
