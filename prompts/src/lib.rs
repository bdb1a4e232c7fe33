//! Prompt files (not built yet): Markdown with YAML frontmatter (`name`, `description`,
//! `schema`, `model`, `max_turns`, `tools`) and a Handlebars body, rendered strictly with
//! inputs validated against the schema.
//!
//! Architecture invariant: pure — no IO beyond reading the prompt text it is given, no
//! network, no knowledge of runners or the engine. Empty until the LLM-steps issue lands.
