-- The cost of llm steps (issue 32): what each attempt cost, by the engine's price table
-- (engine/src/pricing) when its completion arrived, in integer micro-dollars (1 USD =
-- 1,000,000), and the model it called. NULL cost: not an llm attempt, or a model the
-- table does not price (unknown, never zero). Step, run and repository costs are sums of
-- these.
ALTER TABLE attempts ADD COLUMN model TEXT;
ALTER TABLE attempts ADD COLUMN cost_usd_micros BIGINT;

-- What a live llm attempt of a run with `Plan(budget_usd=)` holds of the run's budget,
-- set when it is claimed (its budget's max_cost): the run's attempts together — what the
-- finished ones cost and what the live ones hold — never pass the budget. NULL when the
-- run has no budget.
ALTER TABLE attempts ADD COLUMN reserved_usd_micros BIGINT;
