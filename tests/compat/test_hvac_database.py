"""Compatibility: the database secrets engine and leases through the real hvac client —
configure, create_role, generate_credentials, rotate_root_credentials, read_lease, renew_lease,
revoke_lease, revoke_prefix — against the real MariaDB on this machine (ARCANUM_TEST_MYSQL_ADDR,
default 127.0.0.1:3306, root with an empty password)."""

import os
import uuid

import hvac
import pymysql
import pytest


MYSQL_ADDR = os.environ.get("ARCANUM_TEST_MYSQL_ADDR", "127.0.0.1:3306")
HOST, PORT = MYSQL_ADDR.split(":")


def connect(user, password):
    return pymysql.connect(host=HOST, port=int(PORT), user=user, password=password, connect_timeout=5)


def admin_sql(sql):
    try:
        conn = connect("root", "")
    except pymysql.err.OperationalError as err:
        pytest.fail(f"MariaDB at {MYSQL_ADDR} is required (root, empty password): {err}")
    with conn, conn.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchall()


def user_exists(name):
    return admin_sql(f"SELECT count(*) FROM mysql.user WHERE user = '{name}'")[0][0] == 1


def make_admin():
    """A dedicated MariaDB admin (password initial-admin-pw) that the test may rotate; the caller drops it."""
    admin = "arc_hvac_" + uuid.uuid4().hex[:10]
    admin_sql(f"CREATE USER '{admin}'@'%' IDENTIFIED BY 'initial-admin-pw'")
    admin_sql(f"GRANT ALL PRIVILEGES ON *.* TO '{admin}'@'%' WITH GRANT OPTION")
    return admin


@pytest.fixture()
def db_root(root):
    root.sys.enable_secrets_engine("database", path="database")
    return root


def test_database_engine_and_leases_through_hvac(db_root):
    root = db_root
    admin = make_admin()
    try:
        db = root.secrets.database
        db.configure(
            name="maria",
            plugin_name="mysql-database-plugin",
            allowed_roles=["app", "other"],
            connection_url="{{username}}:{{password}}@tcp(" + MYSQL_ADDR + ")/",
            username=admin,
            password="initial-admin-pw",
        )
        config = db.read_connection(name="maria")["data"]
        assert config["plugin_name"] == "mysql-database-plugin"
        assert "initial-admin-pw" not in str(config)
        assert db.list_connections()["data"]["keys"] == ["maria"]

        statements = ["CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'", "GRANT SELECT ON test.* TO '{{name}}'@'%'"]
        db.create_role(name="app", db_name="maria", creation_statements=statements, default_ttl="1h", max_ttl="2h")
        db.create_role(name="other", db_name="maria", creation_statements=statements, default_ttl="1h", max_ttl="2h")
        role = db.read_role(name="app")["data"]
        assert role["db_name"] == "maria" and role["default_ttl"] == 3600 and role["max_ttl"] == 7200
        assert sorted(db.list_roles()["data"]["keys"]) == ["app", "other"]

        creds = db.generate_credentials(name="app")
        username, password = creds["data"]["username"], creds["data"]["password"]
        assert creds["lease_id"].startswith("database/creds/app/")
        assert creds["lease_duration"] == 3600 and creds["renewable"] is True
        connect(username, password).close()

        lease = root.sys.read_lease(lease_id=creds["lease_id"])["data"]
        assert lease["id"] == creds["lease_id"] and lease["renewable"] is True
        assert 0 < lease["ttl"] <= 3600
        assert root.sys.list_leases(prefix="database/creds/app")["data"]["keys"] == [creds["lease_id"].rsplit("/", 1)[1]]

        renewed = root.sys.renew_lease(lease_id=creds["lease_id"], increment=1800)
        assert renewed["lease_id"] == creds["lease_id"] and renewed["lease_duration"] == 1800

        root.sys.revoke_lease(lease_id=creds["lease_id"])
        assert not user_exists(username)
        with pytest.raises(pymysql.err.OperationalError):
            connect(username, password)
        with pytest.raises(hvac.exceptions.InvalidRequest):
            root.sys.read_lease(lease_id=creds["lease_id"])

        app_users = [db.generate_credentials(name="app")["data"]["username"] for _ in range(2)]
        other = db.generate_credentials(name="other")["data"]["username"]
        root.sys.revoke_prefix(prefix="database/creds/app")
        assert not any(user_exists(u) for u in app_users) and user_exists(other)

        db.rotate_root_credentials(name="maria")
        with pytest.raises(pymysql.err.OperationalError):
            connect(admin, "initial-admin-pw")
        fresh = db.generate_credentials(name="app")["data"]
        connect(fresh["username"], fresh["password"]).close()

        with pytest.raises(hvac.exceptions.InvalidRequest):
            db.generate_credentials(name="missing")
        root.sys.revoke_force(prefix="database/")
        assert not user_exists(other) and not user_exists(fresh["username"])
        db.delete_role(name="other")
        assert db.list_roles()["data"]["keys"] == ["app"]
    finally:
        admin_sql(f"DROP USER IF EXISTS '{admin}'@'%'")


PASSWORD_POLICY = """
length = 28
rule "charset" {
  charset = "abcdefghijklmnopqrstuvwxyz"
  min-chars = 4
}
rule "charset" {
  charset = "0123456789"
  min-chars = 4
}
"""


def test_password_policies_through_hvac_generic_calls(db_root):
    """Released hvac has no password-policy helpers; tools use its generic read/write/list/delete."""
    root = db_root
    root.write("sys/policies/password/db-pw", policy=PASSWORD_POLICY)
    assert root.read("sys/policies/password/db-pw")["data"]["policy"] == PASSWORD_POLICY
    assert root.list("sys/policies/password")["data"]["keys"] == ["db-pw"]
    generated = root.read("sys/policies/password/db-pw/generate")["data"]["password"]
    assert len(generated) == 28 and set(generated) <= set("abcdefghijklmnopqrstuvwxyz0123456789")
    assert sum(c.isdigit() for c in generated) >= 4 and sum(c.isalpha() for c in generated) >= 4
    with pytest.raises(hvac.exceptions.InvalidRequest):
        root.write("sys/policies/password/bad", policy="length = 2")

    admin = make_admin()
    try:
        db = root.secrets.database
        db.configure(
            name="maria",
            plugin_name="mysql-database-plugin",
            allowed_roles=["app"],
            connection_url="{{username}}:{{password}}@tcp(" + MYSQL_ADDR + ")/",
            username=admin,
            password="initial-admin-pw",
            password_policy="db-pw",
        )
        assert db.read_connection(name="maria")["data"]["password_policy"] == "db-pw"
        statements = ["CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'"]
        db.create_role(name="app", db_name="maria", creation_statements=statements)
        creds = db.generate_credentials(name="app")["data"]
        password = creds["password"]
        assert len(password) == 28 and set(password) <= set("abcdefghijklmnopqrstuvwxyz0123456789")
        assert sum(c.isdigit() for c in password) >= 4
        connect(creds["username"], password).close()
        root.sys.revoke_prefix(prefix="database/creds/app")
        assert not user_exists(creds["username"])
    finally:
        root.sys.revoke_force(prefix="database/")
        admin_sql(f"DROP USER IF EXISTS '{admin}'@'%'")
    root.delete("sys/policies/password/db-pw")
    assert root.list("sys/policies/password") is None
