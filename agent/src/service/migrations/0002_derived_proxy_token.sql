-- The file proxy's credential for a node is derived from the service's proxy key, the
-- node and its epoch (`node_api::token::proxy`), so no replica stores it.
ALTER TABLE enrolments DROP COLUMN proxy_token;
