"""Tests run by pytest-django in a test database derived from the
worktree's (`test_<name>`, `test_<name>_gw<n>` under xdist)."""
import pytest

from catalog.models import Category, Product


@pytest.mark.django_db
def test_a_product_has_a_category():
    books = Category.objects.create(name="books")
    Product.objects.create(name="Dune", price="9.99", category=books)
    assert Product.objects.get(name="Dune").category == books


@pytest.mark.django_db
@pytest.mark.parametrize("n", range(4))
def test_each_test_starts_empty(n):
    assert Product.objects.count() == 0
    Product.objects.create(name=f"p{n}")
    assert Product.objects.count() == 1


def test_leased_databases_are_migrated_and_private(leased_db):
    import psycopg

    with psycopg.connect(leased_db) as conn:
        applied = conn.execute(
            "SELECT count(*) FROM django_migrations WHERE app = 'catalog'"
        ).fetchone()[0]
        assert applied == 3
        assert conn.execute("SELECT count(*) FROM catalog_product").fetchone()[0] == 0
        conn.execute("INSERT INTO catalog_product (name, price) VALUES ('mine', 1)")
