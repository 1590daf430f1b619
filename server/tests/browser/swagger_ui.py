"""Swagger UI in a real headless browser (Debian's chromium and
chromedriver, driven by selenium): the page loads from the node, lists
/db/query, and "Try it out" on it returns rows. Saves a screenshot.

Not in .ci/run (the browser's install is slow); run by hand, as the README's
"Tests" section says:

    apt-get install chromium chromium-driver
    target/rqlite-venv/bin/pip install selenium==4.51.0
    target/rqlite-venv/bin/python server/tests/browser/swagger_ui.py 127.0.0.1:4001 swagger.png

against a node (e.g. `deeb dev`) holding a table `foo` with rows.
"""

import sys

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ready
from selenium.webdriver.support.ui import WebDriverWait

SQL = "SELECT * FROM foo"


def main():
    address, screenshot = sys.argv[1], sys.argv[2]
    options = webdriver.ChromeOptions()
    for flag in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1800"]:
        options.add_argument(flag)
    options.binary_location = "/usr/bin/chromium"
    browser = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        wait = WebDriverWait(browser, 30)
        browser.get(f"http://{address}/openapi-ui/")
        operation = wait.until(ready.element_to_be_clickable((By.ID, "operations-rqlite-db_query")))
        print("the page lists GET /db/query:", operation.text.splitlines()[:2])
        operation.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
        wait.until(ready.element_to_be_clickable((By.CSS_SELECTOR, "#operations-rqlite-db_query .try-out__btn"))).click()
        q = wait.until(ready.visibility_of_element_located(
            (By.CSS_SELECTOR, '#operations-rqlite-db_query tr[data-param-name="q"] input')))
        q.send_keys(SQL)
        browser.find_element(By.CSS_SELECTOR, "#operations-rqlite-db_query .execute").click()
        body = wait.until(ready.visibility_of_element_located(
            (By.CSS_SELECTOR, "#operations-rqlite-db_query .live-responses-table .response-col_description pre")))
        status = browser.find_element(
            By.CSS_SELECTOR, "#operations-rqlite-db_query .live-responses-table .response .response-col_status")
        print("status:", status.text.strip())
        print("body:", " ".join(body.text.split())[:300])
        browser.execute_script("arguments[0].scrollIntoView()", body)
        browser.save_screenshot(screenshot)
        if status.text.strip() != "200" or '"values"' not in body.text:
            sys.exit("Try it out on /db/query returned no rows")
        print(f"Try it out returned rows; screenshot in {screenshot}")
    except Exception:
        browser.save_screenshot(screenshot)
        print(f"failed; the page as it was is in {screenshot}")
        raise
    finally:
        browser.quit()


if __name__ == "__main__":
    main()
