-- eavlake reference schema: a multi-tenant EAV store (PostgreSQL 15+).
--
--   psql -v ON_ERROR_STOP=1 -f schemas/eav.sql
--
-- Three tables, as eavlake reads them (names are configurable in eavlake's config):
--   attributes     the catalog: one row per attribute of an entity type of a tenant
--   entities       one row per entity; its hot attributes (~20%) denormalised into JSONB,
--                  keyed by attribute name
--   entity_values  the cold attributes: one row per (entity, attribute), the value in the typed
--                  column that matches the attribute's data_type, the others NULL
-- entities and entity_values are RANGE-partitioned on entity_id and every row carries tenant_id.
-- Debezium captures all three (publication with publish_via_partition_root, so partitions
-- publish as their parent).

CREATE TABLE IF NOT EXISTS attributes (
    attribute_id  bigint      PRIMARY KEY,
    tenant_id     bigint      NOT NULL,
    entity_type   text        NOT NULL,
    name          text        NOT NULL,
    data_type     text        NOT NULL CHECK (data_type IN ('text', 'int', 'decimal', 'bool', 'timestamp', 'json')),
    is_hot        boolean     NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, entity_type, name)
);

CREATE TABLE IF NOT EXISTS entities (
    entity_id      bigint      NOT NULL,
    tenant_id      bigint      NOT NULL,
    entity_type    text        NOT NULL,
    hot_attributes jsonb       NOT NULL DEFAULT '{}'::jsonb,
    version        bigint      NOT NULL DEFAULT 1,
    is_deleted     boolean     NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (entity_id)
) PARTITION BY RANGE (entity_id);

CREATE TABLE IF NOT EXISTS entity_values (
    entity_id       bigint         NOT NULL,
    attribute_id    bigint         NOT NULL REFERENCES attributes (attribute_id),
    tenant_id       bigint         NOT NULL,
    value_text      text,
    value_int       bigint,
    -- The lake's decimal columns are Decimal128(38, 9): keep this scale and eavlake's
    -- `decimal_scale` setting in step.
    value_decimal   numeric(38, 9),
    value_bool      boolean,
    value_timestamp timestamptz,
    value_json      jsonb,
    updated_at      timestamptz    NOT NULL DEFAULT now(),
    PRIMARY KEY (entity_id, attribute_id),
    FOREIGN KEY (entity_id) REFERENCES entities (entity_id) ON DELETE CASCADE
) PARTITION BY RANGE (entity_id);

CREATE INDEX IF NOT EXISTS entities_tenant_idx ON entities (tenant_id, entity_type, entity_id);
CREATE INDEX IF NOT EXISTS entity_values_tenant_idx ON entity_values (tenant_id, entity_id);

-- Partitions of 10 million entity ids each; add more as the id space grows.
DO $$
BEGIN
    FOR i IN 0..9 LOOP
        EXECUTE format(
            'CREATE TABLE IF NOT EXISTS entities_p%s PARTITION OF entities FOR VALUES FROM (%s) TO (%s)',
            i, i::bigint * 10000000, (i + 1)::bigint * 10000000);
        EXECUTE format(
            'CREATE TABLE IF NOT EXISTS entity_values_p%s PARTITION OF entity_values FOR VALUES FROM (%s) TO (%s)',
            i, i::bigint * 10000000, (i + 1)::bigint * 10000000);
    END LOOP;
END $$;
CREATE TABLE IF NOT EXISTS entities_pmax PARTITION OF entities FOR VALUES FROM (100000000) TO (MAXVALUE);
CREATE TABLE IF NOT EXISTS entity_values_pmax PARTITION OF entity_values FOR VALUES FROM (100000000) TO (MAXVALUE);

-- Deletes and updates must carry whole before-images: a physical entity delete has to say which
-- tenant and entity type it belonged to.
ALTER TABLE attributes REPLICA IDENTITY FULL;
ALTER TABLE entities REPLICA IDENTITY FULL;
ALTER TABLE entity_values REPLICA IDENTITY FULL;
DO $$
DECLARE p regclass;
BEGIN
    FOR p IN SELECT inhrelid::regclass FROM pg_inherits
             WHERE inhparent IN ('entities'::regclass, 'entity_values'::regclass) LOOP
        EXECUTE format('ALTER TABLE %s REPLICA IDENTITY FULL', p);
    END LOOP;
END $$;

-- Debezium's signal table (incremental snapshots requested by `eavlake reconcile --repair`).
CREATE TABLE IF NOT EXISTS debezium_signal (
    id   varchar(64) PRIMARY KEY,
    type varchar(32) NOT NULL,
    data varchar(4096)
);

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'eavlake') THEN
        CREATE PUBLICATION eavlake FOR TABLE attributes, entities, entity_values, debezium_signal
            WITH (publish_via_partition_root = true);
    END IF;
END $$;
