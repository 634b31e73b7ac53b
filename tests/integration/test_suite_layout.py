"""Every suite's Redis databases, as tests/README.md tabulates them, agree with where they are declared, and no
database is claimed twice (issue: two suites once shared database 8, and several wrote database 0)."""
import re

from conftest import REDIS_DATABASES, REDIS_DBS, REPO

README = REPO / "tests" / "README.md"
CPP = REPO / "tests" / "integration" / "suite_resources.hpp"
SDK = REPO / "scripts" / "test-sdk.sh"
LIB = REPO / "scripts" / "lib.sh"
STACK_DBS = {0, 1}  # a developer's running stack (scripts/up.sh), which no test may touch


def declared():
    dbs = dict(REDIS_DBS)
    cpp = re.findall(r"redis_databases (\w+)_dbs\{(\d+), (\d+)\};", CPP.read_text())
    assert cpp, f"no pairs found in {CPP}"
    dbs.update({name: (int(view), int(rebuild)) for name, view, rebuild in cpp})
    sdk = re.search(r"^SDK_REDIS_DB=(\d+)", SDK.read_text(), re.M)
    assert sdk, f"no SDK_REDIS_DB in {SDK}"
    dbs["sdk"] = (int(sdk[1]), int(sdk[1]) + 1)
    return dbs


def tabulated():
    rows = re.findall(r"^\| ([\w ]+) \| (\d+) \| (\d+) \|", README.read_text(), re.M)
    return {name: (int(view), int(rebuild)) for name, view, rebuild in rows}


def test_the_readme_table_is_what_the_suites_declare():
    assert tabulated() == declared()


def test_no_database_is_claimed_twice_or_is_the_running_stacks():
    claims = [db for pair in declared().values() for db in pair]
    assert len(claims) == len(set(claims)), sorted(claims)
    assert not set(claims) & STACK_DBS
    assert all(0 <= db < REDIS_DATABASES for db in claims)


def test_the_redis_scripts_start_has_every_database():
    assert re.search(rf"^REDIS_DATABASES={REDIS_DATABASES}$", LIB.read_text(), re.M)
    assert '--databases "$REDIS_DATABASES"' in LIB.read_text()


def test_no_python_suite_names_a_database_by_number():
    # A number in place of a REDIS_DBS lookup would claim a database the table does not show. test_redis_cluster
    # is the exception: database 0 of a Redis Cluster of its own.
    pattern = re.compile(r'_DB\b[\w ,]*= *\d|private_stack\([^,]+, *\d|"-n", *"\d|CREDITS_REDIS(_REBUILD)?_DB": *"\d')
    for path in sorted((REPO / "tests" / "integration").glob("*.py")):
        if path.name in ("conftest.py", "test_redis_cluster.py"):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            assert not pattern.search(line), f"{path.name}:{number}: {line.strip()}"
