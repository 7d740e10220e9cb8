"""Impact-ordered postings of each version's SPLADE vectors (issue #25): the exact sparse side.

Per index version table ``index_v<N>``, ``index_v<N>_postings (term, weight, product_id)``:
one row per non-zero of a product's sparse vector, with a B-tree on ``(term, weight DESC,
product_id)``, so the top m postings of a query term are one index-only range scan
(services.store.postings builds it; services/store/sql/search.sql reads it).

- ``sparse_terms(sparsevec)``: a sparse vector's non-zeros as ``(term, weight)`` rows, terms
  0-based as pgvector's Python ``SparseVector.indices()``; the one definition both the postings
  and the search's query terms come from (read from the vector's exact text form, so a weight
  is the same float4 on both sides).
- ``sparse_postings_sync()``: the trigger function that keeps a version's postings in step
  with its table (an insert adds the product's postings, a change of its sparse vector or a
  delete removes the old ones): the incremental sync's upserts and deletes keep the exact
  sparse side exact.

Versions that exist already get their postings here, owned by their table's owner.

Revision ID: 0009
Revises: 0008
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION sparse_terms(v sparsevec) RETURNS TABLE (term integer, weight real)
        LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
            SELECT split_part(kv, ':', 1)::integer - 1, split_part(kv, ':', 2)::real
            FROM unnest(string_to_array(substr(split_part(v::text, '}', 1), 2), ',')) AS kv
        $$;

        CREATE FUNCTION sparse_postings_sync() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP IN ('UPDATE', 'DELETE') THEN
                EXECUTE format('DELETE FROM %I x USING sparse_terms($1) s '
                               'WHERE x.term = s.term AND x.weight = s.weight '
                               'AND x.product_id = $2', TG_TABLE_NAME || '_postings')
                USING OLD.sparse, OLD.product_id;
            END IF;
            IF TG_OP IN ('INSERT', 'UPDATE') THEN
                EXECUTE format('INSERT INTO %I (term, weight, product_id) '
                               'SELECT term, weight, $2 FROM sparse_terms($1)',
                               TG_TABLE_NAME || '_postings')
                USING NEW.sparse, NEW.product_id;
            END IF;
            RETURN NULL;
        END
        $$;
        """
    )
    # Versions built before this migration (their tables still exist): their postings now.
    op.execute(
        """
        DO $$
        DECLARE
            t text;
            owner name;
        BEGIN
            FOR t, owner IN
                SELECT c.relname, pg_get_userbyid(c.relowner)
                FROM index_versions v JOIN pg_class c ON c.relname = 'index_v' || v.id
                WHERE c.relkind = 'r'
            LOOP
                EXECUTE format('CREATE TABLE IF NOT EXISTS %I (term integer NOT NULL, '
                               'weight real NOT NULL, product_id bigint NOT NULL)',
                               t || '_postings');
                EXECUTE format('INSERT INTO %I SELECT s.term, s.weight, e.product_id '
                               'FROM %I e CROSS JOIN LATERAL sparse_terms(e.sparse) s',
                               t || '_postings', t);
                EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I (term, weight DESC, '
                               'product_id)', t || '_postings_impact', t || '_postings');
                EXECUTE format('CREATE TRIGGER %I AFTER INSERT OR UPDATE OF sparse OR DELETE '
                               'ON %I FOR EACH ROW EXECUTE FUNCTION sparse_postings_sync()',
                               t || '_postings_sync', t);
                EXECUTE format('ALTER TABLE %I OWNER TO %I', t || '_postings', owner);
            END LOOP;
        END
        $$;
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DO $$
        DECLARE t text;
        BEGIN
            FOR t IN SELECT c.relname FROM pg_class c
                     WHERE c.relname ~ '^index_v[0-9]+$' AND c.relkind = 'r'
            LOOP
                EXECUTE format('DROP TRIGGER IF EXISTS %I ON %I', t || '_postings_sync', t);
                EXECUTE format('DROP TABLE IF EXISTS %I', t || '_postings');
            END LOOP;
        END
        $$;
        DROP FUNCTION sparse_postings_sync();
        DROP FUNCTION sparse_terms(sparsevec);
        """
    )
